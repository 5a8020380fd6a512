"""The conversation database: one SQLite file under ZHIYIN_HOME, shared by the page, the CLI and the API.

WAL mode (readers never wait for the writer), one writer at a time (every write is ``BEGIN IMMEDIATE``
and waits up to ``timeout`` seconds for another writer), a new connection per operation (safe from
any thread: Streamlit runs each browser tab in its own). Errors come out as ``ConversationError``
with a sentence that names the fix; a damaged file is reported and never written to.
"""
from __future__ import annotations

import functools
import json
import sqlite3
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from conversations.schema import migrate, now, unknown_migrations

MAX_READER = 128  # characters in a reader name (a hashed user id from an API client fits)
TITLE_CHARS = 48
T = TypeVar("T")


class ConversationError(RuntimeError):
    """A conversation that cannot be saved, found or opened; the message says what to do."""


def reader_name(name: str | None, default: str = "guest") -> str:
    """A reader profile's name as stored: any characters (emoji, quotes, '../' are only text here),
    whitespace collapsed, control characters removed; empty means ``default``; too long is refused."""
    text = unicodedata.normalize("NFC", "".join(c for c in (name or "") if unicodedata.category(c) != "Cc"))
    text = " ".join(text.split())
    if not text:
        return default
    if len(text) > MAX_READER:
        raise ConversationError(f"A reader name has at most {MAX_READER} characters (this one has {len(text)}); "
                                "pick a shorter one.")
    return text


def title_of(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class ConversationInfo:
    """One row of the conversation list."""

    id: int
    character: str
    reader: str
    mode: str
    title: str
    head_id: int | None
    created_at: str
    updated_at: str
    messages: int = 0


@dataclass(frozen=True)
class StoredMessage:
    """One message of the tree (``prompt`` is the exact turn prompt that produced an answer)."""

    id: int
    parent_id: int | None
    role: str
    content: str
    mode: str
    created_at: str
    prompt: str | None = None
    sources: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    model: str = ""


@dataclass(frozen=True)
class Memory:
    """Something a reader told a character about themselves, in the reader's own words."""

    id: int
    reader: str
    character: str
    kind: str
    text: str
    created_at: str
    updated_at: str
    conversation_id: int | None = None
    message_id: int | None = None


def _explained(fn: Callable[..., T]) -> Callable[..., T]:
    """SQLite's errors as a sentence naming the fix (the file is never rewritten to 'repair' it)."""

    @functools.wraps(fn)
    def wrapper(self: ConversationStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ConversationError(
                    f"The conversation database {self.label} is locked by another program (waited "
                    f"{self.timeout:g} s); this change was not saved. Close that program, or try again.") from exc
            raise ConversationError(f"The conversation database {self.label} cannot be used ({exc}); "
                                    "check that its folder is writable.") from exc
        except sqlite3.DatabaseError as exc:
            raise ConversationError(
                f"The conversation database {self.label} is damaged ({exc}); nothing was written to it. "
                "Move it aside (or restore a backup) and a new one is started; until then conversations "
                "are not saved.") from exc

    return wrapper


class ConversationStore:
    """Conversations, their message trees and the readers' memories in one SQLite file."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._uri = self.path.startswith("file:")
        if not self._uri:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One idle connection stays open: an in-memory database lives as long as one does, and a file's last
        # connection closing checkpoints the WAL with an fsync (~10 ms on every write, before each first token).
        self._keeper = sqlite3.connect(self.path, uri=self._uri, check_same_thread=False)
        self._open()
        self._keeper.execute("SELECT COUNT(*) FROM _migrations").fetchone()  # now it holds the WAL open too

    @property
    def label(self) -> str:
        return "(in memory)" if self._uri else self.path

    @classmethod
    def default(cls) -> ConversationStore:
        """The store at ``$ZHIYIN_HOME/conversations.db``."""
        from settings import paths

        return cls(paths().conversations)

    @classmethod
    def in_memory(cls) -> ConversationStore:
        """A private store that lives as long as this object (the page's fallback when the file is unusable)."""
        return cls(f"file:zhiyin-{uuid.uuid4().hex}?mode=memory&cache=shared")

    @property
    def persistent(self) -> bool:
        return not self._uri

    @_explained
    def _open(self) -> None:
        with self._connect() as db:
            if self.persistent:
                db.execute("PRAGMA journal_mode=WAL")  # persistent in the file; a damaged file fails here, unwritten
            migrate(db)
            self.newer = unknown_migrations(db)  # written by a newer app: readable, reported by callers

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, uri=self._uri,
                             check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            # WAL's recommended level: a commit no longer waits for fsync (24 -> ~1 ms before each first token);
            # a process crash loses nothing committed, a power cut at worst the last turns, never the file.
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock at once (waits for another writer), then commits."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ conversations
    @_explained
    def create(self, character: str, reader: str, mode: str, title: str = "") -> int:
        stamp = now()
        with self._write() as db:
            cur = db.execute("INSERT INTO conversations (character, reader, mode, title, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (character, reader, mode, title, stamp, stamp))
            return int(cur.lastrowid)

    _LIST = ("SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS messages "
             "FROM conversations c")

    @_explained
    def get(self, conversation_id: int) -> ConversationInfo | None:
        with self._connect() as db:
            row = db.execute(self._LIST + " WHERE c.id = ?", (conversation_id,)).fetchone()
        return ConversationInfo(**dict(row)) if row else None

    @_explained
    def list(self, character: str, reader: str | None = None, mode: str | None = None,
             limit: int | None = None) -> list[ConversationInfo]:
        """A character's conversations, most recent first (one reader's, or every reader's)."""
        where, args = ["c.character = ?"], [character]
        if reader is not None:
            where.append("c.reader = ?")
            args.append(reader)
        if mode is not None:
            where.append("c.mode = ?")
            args.append(mode)
        sql = self._LIST + " WHERE " + " AND ".join(where) + " ORDER BY c.updated_at DESC, c.id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            return [ConversationInfo(**dict(r)) for r in db.execute(sql, args)]

    @_explained
    def rename(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())[:200]
        with self._write() as db:
            db.execute("UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                       (title, now(), conversation_id))

    @_explained
    def delete(self, conversation_id: int) -> None:
        """The conversation and all its messages (memories distilled from it stay: they are the reader's)."""
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @_explained
    def set_head(self, conversation_id: int, message_id: int | None) -> None:
        with self._write() as db:
            db.execute("UPDATE conversations SET head_id = ?, updated_at = ? WHERE id = ?",
                       (message_id, now(), conversation_id))

    # ----------------------------------------------------------------------- messages
    @_explained
    def add_message(self, conversation_id: int, parent_id: int | None, role: str, content: str, *, mode: str,
                    prompt: str | None = None, sources: list[dict] | None = None, timings: dict | None = None,
                    tokens: dict | None = None, model: str = "") -> int:
        """Append one message under ``parent_id`` and make it the conversation's head (one transaction)."""
        stamp = now()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, prompt, sources_json, "
                "timings_json, tokens_json, model, mode, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, parent_id, role, content, prompt, json.dumps(sources or [], ensure_ascii=False),
                 json.dumps(timings or {}), json.dumps(tokens or {}), model, mode, stamp))
            mid = int(cur.lastrowid)
            title = title_of(content) if role == "user" else ""
            db.execute("UPDATE conversations SET head_id = ?, updated_at = ?, "
                       "title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                       (mid, stamp, title, conversation_id))
            return mid

    @_explained
    def messages(self, conversation_id: int) -> dict[int, StoredMessage]:
        """Every message of a conversation (all branches and swipes) by id, in one query."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,))
            return {r["id"]: StoredMessage(
                r["id"], r["parent_id"], r["role"], r["content"], r["mode"], r["created_at"], r["prompt"],
                json.loads(r["sources_json"]), json.loads(r["timings_json"]), json.loads(r["tokens_json"]),
                r["model"]) for r in rows}

    @_explained
    def delete_turn(self, conversation_id: int, user_message_id: int) -> int | None:
        """Remove one question with its answers; the questions that followed it follow the one before.
        Returns the conversation's head afterwards."""
        with self._write() as db:
            row = db.execute("SELECT parent_id FROM messages WHERE id = ? AND conversation_id = ? AND role = 'user'",
                             (user_message_id, conversation_id)).fetchone()
            if row is None:
                raise ConversationError(f"Message {user_message_id} is not a question of conversation "
                                        f"{conversation_id}; reload the page.")
            parent = row["parent_id"]
            answers = [r[0] for r in db.execute("SELECT id FROM messages WHERE parent_id = ?", (user_message_id,))]
            marks = ",".join("?" * len(answers))
            if answers:
                db.execute(f"UPDATE messages SET parent_id = ? WHERE parent_id IN ({marks})", (parent, *answers))
            head = db.execute("SELECT head_id FROM conversations WHERE id = ?", (conversation_id,)).fetchone()[0]
            db.execute("DELETE FROM messages WHERE id = ?", (user_message_id,))  # its answers cascade
            if head == user_message_id or head in answers:
                head = parent
            db.execute("UPDATE conversations SET head_id = ?, updated_at = ? WHERE id = ?",
                       (head, now(), conversation_id))
            return head

    # ----------------------------------------------------------------------- memories
    @_explained
    def memories(self, reader: str, character: str) -> list[Memory]:
        """What ``reader`` told ``character``, oldest first. Never another reader's or character's."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM memories WHERE reader = ? AND character = ? ORDER BY id",
                              (reader, character))
            return [Memory(**dict(r)) for r in rows]

    @_explained
    def remember(self, reader: str, character: str, kind: str, text: str, conversation_id: int | None = None,
                 message_id: int | None = None, replaces_kind: bool = False) -> int | None:
        """Store a memory (None if she already had it). ``replaces_kind``: it supersedes the reader's
        earlier memory of this kind (a name, say)."""
        stamp = now()
        with self._write() as db:
            if replaces_kind:
                db.execute("DELETE FROM memories WHERE reader = ? AND character = ? AND kind = ? AND text != ?",
                           (reader, character, kind, text))
            cur = db.execute(
                "INSERT OR IGNORE INTO memories (reader, character, kind, text, conversation_id, message_id, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (reader, character, kind, text, conversation_id, message_id, stamp, stamp))
            return int(cur.lastrowid) if cur.rowcount else None

    @_explained
    def correct_memory(self, reader: str, character: str, memory_id: int, text: str) -> None:
        """The reader's correction of one memory (an empty text forgets it)."""
        text = " ".join(text.split())
        with self._write() as db:
            if not text:
                db.execute("DELETE FROM memories WHERE id = ? AND reader = ? AND character = ?",
                           (memory_id, reader, character))
                return
            db.execute("DELETE FROM memories WHERE reader = ? AND character = ? AND text = ? AND id != ?",
                       (reader, character, text, memory_id))
            db.execute("UPDATE memories SET text = ?, updated_at = ? WHERE id = ? AND reader = ? AND character = ?",
                       (text, now(), memory_id, reader, character))

    @_explained
    def forget(self, reader: str, character: str, memory_id: int | None = None) -> int:
        """Forget one memory, or (``memory_id`` None) everything ``reader`` told ``character``; returns how many."""
        with self._write() as db:
            if memory_id is None:
                cur = db.execute("DELETE FROM memories WHERE reader = ? AND character = ?", (reader, character))
            else:
                cur = db.execute("DELETE FROM memories WHERE id = ? AND reader = ? AND character = ?",
                                 (memory_id, reader, character))
            return cur.rowcount


_DEFAULTS: dict[str, ConversationStore] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_store() -> ConversationStore:
    """The store of the current ZHIYIN_HOME, opened (and migrated) once per process and path."""
    from settings import paths

    path = str(paths().conversations)
    with _DEFAULTS_LOCK:
        if path not in _DEFAULTS or not Path(path).exists():
            _DEFAULTS[path] = ConversationStore(path)
        return _DEFAULTS[path]
