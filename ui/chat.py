"""The conversation of one browser session: its Companion, its messages, sources as Markdown."""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from characters import Card
from knowledge_base.store import KnowledgeStore
from ragchat import Companion
from settings import Settings

WAIT_TIMEOUT_S = 600  # a generation longer than this is stuck; the waiting tab gives up with a message


@dataclass
class Message:
    """One bubble on the page (what is needed to draw it again after a rerun)."""

    role: str  # "assistant" | "user"
    content: str
    sources: list[dict] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)  # WAV per spoken sentence
    video: list[bytes] = field(default_factory=list)  # MP4 per sentence
    note: str = ""  # e.g. "no passage matched this question"


@dataclass
class Conversation:
    """A session's Companion plus the messages shown; rebuilt when the character, mode or settings change."""

    key: tuple
    companion: Companion
    messages: list[Message] = field(default_factory=list)

    def restart(self) -> None:
        """A new conversation with the same character: history cleared, greeting shown."""
        self.companion.reset()
        self.messages = [Message("assistant", self.companion.greeting())]


def conversation_key(card: Card, mode: str, settings: Settings) -> tuple:
    return (card.id, mode, settings)


def open_conversation(card: Card, mode: str, settings: Settings, llm: Any = None) -> Conversation:
    """A fresh Companion for this session (the chat model is shared, the history is not)."""
    bot = Companion(card, mode=mode, llm=llm, settings=settings)
    conv = Conversation(conversation_key(card, mode, settings), bot)
    conv.restart()
    return conv


def has_knowledge(character_id: str) -> bool:
    return KnowledgeStore.exists(character_id)


def no_knowledge_message(card: Card) -> str:
    return (f"{card.name} has no knowledge yet: add a book on the Knowledge page "
            f"(or run `python gen_chroma.py build {card.id} PATH/TO/BOOK.txt`).")


@contextmanager
def one_at_a_time(lock: threading.Lock, waiting: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Hold the process-wide generation lock; if another tab holds it, wait inside ``waiting()`` (a spinner)."""
    if not lock.acquire(blocking=False):
        with waiting():
            if not lock.acquire(timeout=WAIT_TIMEOUT_S):
                raise TimeoutError("Another conversation has been answering for 10 minutes; try again later.")
    try:
        yield
    finally:
        lock.release()


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~$:])")


def escape_markdown(text: str) -> str:
    """Show a passage as text: Markdown and Streamlit directives in a book must not render."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def highlight(text: str, words: list[str]) -> str:
    """Markdown of ``text`` with every matched word (case-insensitive) on a highlighted background."""
    words = sorted({w for w in words if w and w.strip()}, key=len, reverse=True)
    if not words:
        return escape_markdown(text)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(escape_markdown(text[pos : m.start()]))
        out.append(f":orange-background[**{escape_markdown(m.group(0))}**]")
        pos = m.end()
    out.append(escape_markdown(text[pos:]))
    return "".join(out)


def source_title(source: dict) -> str:
    where = " · ".join(x for x in (source.get("chapter"), source.get("source")) if x)
    return f"[{source.get('n', '?')}] {where or 'passage'}"


def sources_markdown(sources: list[dict]) -> str:
    """All sources of one answer: title, matched words, then the passage with matches highlighted."""
    blocks = []
    for s in sources:
        matched = ", ".join(s.get("matched") or []) or "—"
        lines = [x.strip() for x in str(s.get("passage") or s.get("text") or "").splitlines() if x.strip()]
        body = "  \n> ".join(highlight(x, s.get("matched") or []) for x in lines)
        blocks.append(f"**{escape_markdown(source_title(s))}**  \n"
                      f"matched: {escape_markdown(matched)} · score {s.get('score', 0):.3f}\n\n> {body}")
    return "\n\n".join(blocks)
