"""A tiny registry keyed by name: every swappable stage (embedder, chat model, TTS,
ASR, face renderer, face enhancer) registers its implementations here and is chosen
by a setting, never by if/elif chains spread over files."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that no implementation registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> factories for one kind of stage."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@EMBEDDERS.register("use")`` on a class or factory function."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return deco

    def create(self, name: str, /, **kwargs: object) -> T:
        """Build the implementation registered as ``name``."""
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownName(
                f"Unknown {self.kind} '{name}'. Choose one of: {', '.join(sorted(self._factories))}."
            ) from None
        return factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))
