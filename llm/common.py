"""What every chat backend shares: the missing-model error, the ChatML template, message
conversion, stop-string merging, a thread pump that turns callbacks into a stream, and the one place
for repetition control and words to steer away from (``Repetition``, ``steering``)."""
from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.messages import BaseMessage


class ModelMissing(RuntimeError):
    """A chat model that is not on disk (or not installable); the message says how to get it."""


# Qwen2.5's chat format: the transformers backend gives it to a tokenizer that arrives without a
# template (a GGUF-derived one may), and fine-tuning trains with it, so both must be the same string.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> OpenAI-style role/content dicts (what chat templates expect)."""
    from langchain_core.messages import convert_to_openai_messages

    out = convert_to_openai_messages(messages)
    return [{"role": m["role"], "content": m.get("content") or ""} for m in out]


def merge_stop(*stops: list[str] | None) -> list[str]:
    """The stop strings of the model, the call and its kwargs, each once, in order."""
    merged: list[str] = []
    for stop in stops:
        for s in stop or []:
            if s and s not in merged:
                merged.append(s)
    return merged


@dataclass(frozen=True)
class Repetition:
    """Loop and echo control in llama.cpp's terms; each backend takes what it has (``for_*``).

    DRY (llama.cpp's "don't repeat yourself" sampler) penalises a token that would extend a sequence
    already seen in the last ``dry_penalty_last_n`` tokens, more the longer the sequence: it stops the
    我想去扬州，我想去苏州，我想去… loop without touching a name said twice. Its window also covers the end
    of the prompt, so saying the question back is penalised too. Measured with bench/persona_bench.py
    (docs/persona.md)."""

    repeat_penalty: float = 1.0  # 1.0 = off; divides the logits of tokens in the last repeat_last_n
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0  # 0 = off
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 192
    # transformers has no DRY: a generated n-gram (of tokens) may occur at most this often (0 = off).
    max_ngram_repeats: int = 0
    ngram: int = 4

    def for_llamacpp(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("max_ngram_repeats", "ngram")}

    def for_openai(self) -> dict[str, Any]:
        """The two penalties every OpenAI-compatible server accepts (others may refuse unknown fields)."""
        return {k: v for k, v in (("presence_penalty", self.presence_penalty),
                                  ("frequency_penalty", self.frequency_penalty)) if v}


# Per mode, both with a short DRY window: the answer itself and the end of the prompt (the question). A
# window over the whole prompt (-1), or repeats allowed only up to 2 tokens, garbled names the answer had
# every reason to repeat ("all the way to Netherield"): see docs/persona.md.
REPETITION = {
    "reader": Repetition(dry_multiplier=0.8, dry_allowed_length=3, dry_penalty_last_n=64, max_ngram_repeats=2),
    "roleplay": Repetition(repeat_penalty=1.1, frequency_penalty=0.2, dry_multiplier=0.8, dry_allowed_length=3,
                           dry_penalty_last_n=64, max_ngram_repeats=2),
}


def word_forms(word: str) -> list[str]:
    """How a word may start in generated text: Chinese as is; a Latin word after a space, and capitalised.
    A bare lowercase Latin form is left out: as a token it is also a piece of other words ("app" in
    "disappoint"), and banning it garbles them."""
    if not re.search(r"[A-Za-z]", word):
        return [word]
    cap = word[:1].upper() + word[1:]
    return list(dict.fromkeys([" " + word, " " + cap, cap]))


def steering(model: Any, repetition: Repetition | None, avoid: Sequence[str] = ()) -> dict[str, Any]:
    """Per-call keyword arguments that bring repetition control and the words to avoid to ``model``.

    Our backends (``supports_steering``) take both; an OpenAI-compatible client gets the standard
    penalties only (a token id to bias means nothing across servers); any other model gets nothing."""
    if getattr(model, "supports_steering", False):
        return {"repetition": repetition, "avoid": tuple(avoid)}
    if type(model).__name__ == "ChatOpenAI" and repetition is not None:
        return repetition.for_openai()
    return {}


_SENTINEL = object()


def pump(produce: Callable[[Callable[[Any], bool]], Any]) -> Iterator[Any]:
    """Run a callback-driven producer in a thread and yield its items as they arrive.

    ``produce(emit)`` calls ``emit(item)`` per item; ``emit`` returns True once the consumer
    has stopped iterating, so the producer can cancel generation instead of running on.
    """
    items: queue.Queue[Any] = queue.Queue()
    cancelled = threading.Event()

    def emit(item: Any) -> bool:
        items.put(item)
        return cancelled.is_set()

    def run() -> None:
        try:
            produce(emit)
        except BaseException as exc:  # handed to the consumer thread, re-raised there
            items.put(exc)
        finally:
            items.put(_SENTINEL)

    worker = threading.Thread(target=run, name="llm-stream", daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not _SENTINEL:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        worker.join()
