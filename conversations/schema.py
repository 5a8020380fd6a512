"""The database's shape, as numbered migrations applied in order (an old file upgrades itself).

Each migration is a function ``mNNN_what(db)`` registered with ``@migration``; ``migrate(db)`` applies
those not yet recorded in ``_migrations``, each inside its own write transaction together with its
record, so a crash leaves either the old or the new shape. Never edit a released migration: add the
next one. The design (docs/conversations.md):

- ``conversations``: one per (character, reader), with its mode, title and ``head_id``, the last
  message of the path the reader is on (which swipe and which branch were picked).
- ``messages``: a tree. Every message has a ``parent_id`` (NULL for a conversation's first question).
  A user message's children are her answers: several answers to one question are swipes. An
  assistant message's children are the next questions: several are branches (an edited question
  is a new child of the same parent). The path from ``head_id`` up to the root is the conversation
  as shown and as the model sees it. An assistant message keeps the exact turn prompt that was sent
  (passages included), so a resumed conversation rebuilds the same prompt prefix.
- ``memories``: what a reader told a character about themselves, per (reader, character).
"""
from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
migration = MIGRATIONS.append


def now() -> str:
    """A UTC timestamp that sorts as text."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns their names. ``db`` is in autocommit mode."""
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name = '_migrations'")}
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")} if have else set()
    if all(fn.__name__ in done for fn in MIGRATIONS):
        return []  # the usual case: a read only, so a busy writer elsewhere does not delay opening
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = []
    for fn in MIGRATIONS:
        name = fn.__name__
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # Checked inside the write lock: two processes opening a new file at once apply each step once.
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone() is None:
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now()))
                applied.append(name)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied


def unknown_migrations(db: sqlite3.Connection) -> list[str]:
    """Migrations recorded in the file that this code does not know (a newer app wrote it)."""
    known = {fn.__name__ for fn in MIGRATIONS}
    return [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name") if r[0] not in known]


@migration
def m001_conversations_and_messages(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            character TEXT NOT NULL,
            reader TEXT NOT NULL,
            mode TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            head_id INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX conversations_by_owner ON conversations (character, reader, updated_at)")
    db.execute("""
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            prompt TEXT,
            sources_json TEXT NOT NULL DEFAULT '[]',
            timings_json TEXT NOT NULL DEFAULT '{}',
            tokens_json TEXT NOT NULL DEFAULT '{}',
            model TEXT NOT NULL DEFAULT '',
            mode TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, id)")
    db.execute("CREATE INDEX messages_by_parent ON messages (parent_id)")


@migration
def m002_memories(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE memories (
            id INTEGER PRIMARY KEY,
            reader TEXT NOT NULL,
            character TEXT NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            conversation_id INTEGER,
            message_id INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""")
    db.execute("CREATE UNIQUE INDEX memories_unique ON memories (reader, character, text)")
