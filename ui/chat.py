"""The conversation of one browser session: its saved conversation, its messages, sources as Markdown."""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from characters import Card
from conversations import ConversationStore, SavedConversation, open_or_create
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
    audio: list[bytes] = field(default_factory=list)  # WAV per spoken sentence (this session only: not saved)
    video: list[bytes] = field(default_factory=list)  # MP4 per sentence (this session only)
    note: str = ""  # e.g. "no passage matched this question"
    id: int | None = None  # the saved message (None: the greeting)
    alternatives: tuple[int, ...] = ()  # this message and its swipes (answers) or branches (questions)

    @property
    def position(self) -> int:
        return self.alternatives.index(self.id) if self.id in self.alternatives else 0


@dataclass
class Conversation:
    """A session's saved conversation, plus what only this session has: the audio and video of its answers."""

    key: tuple
    saved: SavedConversation
    media: dict[int, tuple[list[bytes], list[bytes]]] = field(default_factory=dict)  # message id -> (audio, video)
    notes: dict[int, str] = field(default_factory=dict)  # message id -> this session's note (no passage matched)

    @property
    def companion(self) -> Companion:
        return self.saved.companion

    @property
    def messages(self) -> list[Message]:
        """The greeting, then the path of the conversation the reader is on."""
        out = [Message("assistant", self.companion.greeting())]
        for shown in self.saved.shown():
            m = shown.message
            audio, video = self.media.get(m.id, ([], []))
            out.append(Message(m.role, m.content, list(m.sources), audio, video,
                               self.notes.get(m.id, "") + timing_note(m.timings), m.id, shown.alternatives))
        return out

    def restart(self) -> None:
        """A new conversation with the same character (the old one stays saved)."""
        old = self.saved
        old.companion.reset()
        self.saved = SavedConversation(old.companion, old.store, old.reader, None, old.settings)
        self.media.clear()
        self.notes.clear()


def timing_note(timings: dict) -> str:
    if not timings or "first_token_ms" not in timings:
        return ""
    # What the reader saw: in character the guard holds the model's first words until a sentence is whole.
    first = timings.get("first_shown_ms", timings["first_token_ms"])
    return (f"{first / 1000:.1f} s to the first word, "
            f"{timings.get('total_ms', 0) / 1000:.1f} s in all")


def conversation_key(card: Card, mode: str, settings: Settings, reader: str = "") -> tuple:
    return (card.id, mode, settings, reader)


def open_conversation(card: Card, mode: str, settings: Settings, llm: Any = None, reader: str = "",
                      conversation_id: int | None = None,
                      store: ConversationStore | None = None) -> Conversation:
    """This session's conversation: a saved one resumed, or a new one (saved at its first question)."""
    saved = open_or_create(card, reader or None, mode, conversation_id, llm=llm, settings=settings, store=store)
    return Conversation(conversation_key(card, saved.mode, settings, saved.reader), saved)


def has_knowledge(character_id: str) -> bool:
    """Whether she can be asked: her store is built, or she has no book at all (a card alone talks from
    her card; retrieval then finds nothing, which ragchat.StoreRetriever allows)."""
    from characters import has_books

    return KnowledgeStore.exists(character_id) or not has_books(character_id)


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
