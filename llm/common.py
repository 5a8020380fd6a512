"""What every chat backend shares: the missing-model error, the ChatML template, message
conversion, stop-string merging, and a thread pump that turns callbacks into a stream."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
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
