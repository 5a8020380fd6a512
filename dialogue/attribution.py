"""Who says a quotation: the interface every language's speech-tag rules implement, and their registry."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from dialogue.segments import Paragraph
from registry import Registry


@dataclass
class Attribution:
    """Who says a quotation, how we know, and whether it continues the quotation before it."""

    alias: str
    method: str


class Attributor(Protocol):
    """Gives each quotation of a paragraph to the target character, or to nobody."""

    def attribute(self, pars: list[Paragraph], k: int) -> dict[int, Attribution]: ...


ATTRIBUTORS: Registry[Callable[..., Attributor]] = Registry("speaker attributor")


def alias_re(aliases: Iterable[str]) -> str:
    """A regex alternation of the names, longest first (林黛玉 before 黛玉)."""
    names = sorted({a for a in aliases if a}, key=len, reverse=True)
    return "|".join(re.escape(a) for a in names)

