"""A saved conversation: a Companion whose turns are written to the store as they happen.

``SavedConversation.turn(question)`` yields the same events as ``Companion.turn`` (so a Pipeline can
speak and animate it) and saves the question before generation and the answer (with the exact turn
prompt, sources, timings, tokens and model) as soon as it is complete, or as far as it was shown when
the reader stopped it. The conversation is a tree (schema.py): regenerate adds a swipe under the
same question, an edited question starts a branch beside the old one, and ``select`` moves between them.
If the file cannot be written (locked, damaged), the conversation goes on in an in-memory copy and
``warning`` says so; nothing is lost from what is shown.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from characters import Card
from conversations import memory as memories
from conversations.schema import now
from conversations.store import (
    ConversationError,
    ConversationStore,
    StoredMessage,
    default_store,
    reader_name,
)
from events import Done, Event
from ragchat import Budget, Companion, Turn
from settings import Settings, load_settings

log = logging.getLogger("zhiyin.conversations")


@dataclass(frozen=True)
class Shown:
    """A message on the path being shown, with its alternatives (swipes or branches), oldest first."""

    message: StoredMessage
    alternatives: tuple[int, ...]

    @property
    def position(self) -> int:
        return self.alternatives.index(self.message.id)


def children(messages: dict[int, StoredMessage]) -> dict[int | None, list[int]]:
    kids: dict[int | None, list[int]] = {}
    for m in messages.values():
        kids.setdefault(m.parent_id, []).append(m.id)
    return kids


def path_of(messages: dict[int, StoredMessage], head: int | None) -> list[StoredMessage]:
    """The messages from the first question down to ``head``."""
    path: list[StoredMessage] = []
    seen: set[int] = set()
    while head is not None and head in messages and head not in seen:
        seen.add(head)
        path.append(messages[head])
        head = messages[head].parent_id
    return path[::-1]


def turns_of(path: list[StoredMessage]) -> list[Turn]:
    """The answered turns of a path, as a Companion replays them (an unanswered last question is left out)."""
    turns = []
    for user, answer in zip(path, path[1:], strict=False):
        if user.role == "user" and answer.role == "assistant":
            turns.append(Turn(user.content, answer.prompt or user.content, answer.content, list(answer.sources)))
    return turns


class SavedConversation:
    """One conversation of one reader with one character, saved turn by turn."""

    def __init__(self, companion: Companion, store: ConversationStore, reader: str,
                 conversation_id: int | None = None, settings: Settings | None = None) -> None:
        self.companion = companion
        self.store = store
        self.reader = reader
        self.settings = settings or companion.settings
        self.id = conversation_id
        self.head: int | None = None
        self.messages: dict[int, StoredMessage] = {}
        self.warning = ""  # the latest saving problem, one sentence for the page or the log
        self._rewound = False
        self.recall = memories.Recall(store, reader, companion.card.id)
        companion.memory = self.recall if self.settings.memory else None
        if conversation_id is not None:
            self.reload()

    # ---- what it is ---------------------------------------------------------------------
    @property
    def card(self) -> Card:
        return self.companion.card

    @property
    def mode(self) -> str:
        return self.companion.mode.name

    @property
    def title(self) -> str:
        info = self.store.get(self.id) if self.id is not None else None
        return info.title if info else ""

    def path(self) -> list[StoredMessage]:
        return path_of(self.messages, self.head)

    def shown(self) -> list[Shown]:
        """The path with each message's alternatives (her other answers to a question; other versions of a question)."""
        kids = children(self.messages)
        return [Shown(m, tuple(i for i in kids.get(m.parent_id, []) if self.messages[i].role == m.role))
                for m in self.path()]

    # ---- loading ------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the conversation again (another tab or the API may have written to it)."""
        info = self.store.get(self.id) if self.id is not None else None
        if info is None:
            raise ConversationError(f"Conversation {self.id} no longer exists; start a new one.")
        self.messages = self.store.messages(info.id)
        self.head = info.head_id
        self._rewound = False
        self.companion.restore(turns_of(self.path()))

    def _sync(self) -> None:
        """Catch up with writes from elsewhere before a turn, so it follows the newest message."""
        if self.id is None:
            return
        try:
            info = self.store.get(self.id)
            if info is None:
                self.warning = "This conversation was deleted elsewhere; your next question starts a new one."
                self.id, self.head, self.messages = None, None, {}
                self.companion.reset()
            elif info.head_id != self.head:
                self.reload()
        except ConversationError as exc:
            self.warning = str(exc)

    # ---- writing ------------------------------------------------------------------------
    def _add(self, parent: int | None, role: str, content: str, **extra: Any) -> int:
        """Save one message under ``parent`` (it becomes the head); on a write failure, go on in memory."""
        for attempt in (1, 2):
            try:
                if self.id is None:
                    self.id = self.store.create(self.card.id, self.reader, self.mode)
                mid = self.store.add_message(self.id, parent, role, content, mode=self.mode, **extra)
                break
            except ConversationError as exc:
                if attempt == 2 or not self.store.persistent:
                    raise
                parent = self._go_on_in_memory(exc, parent)
        self.messages[mid] = StoredMessage(mid, parent, role, content, self.mode, now(), extra.get("prompt"),
                                           list(extra.get("sources") or []), dict(extra.get("timings") or {}),
                                           dict(extra.get("tokens") or {}), extra.get("model", ""))
        self.head = mid
        return mid

    def _go_on_in_memory(self, exc: ConversationError, parent: int | None) -> int | None:
        """Copy the path shown into an in-memory store and carry on there; returns ``parent``'s new id."""
        self.warning = f"{exc} This conversation goes on without being saved."
        log.warning(self.warning)
        mem = ConversationStore.in_memory()
        new_id = mem.create(self.card.id, self.reader, self.mode)
        ids: dict[int | None, int | None] = {None: None}
        for m in self.path():
            ids[m.id] = mem.add_message(new_id, ids[m.parent_id], m.role, m.content, mode=m.mode, prompt=m.prompt,
                                        sources=m.sources, timings=m.timings, tokens=m.tokens, model=m.model)
        self.store, self.recall.store, self.id = mem, mem, new_id
        self.messages = mem.messages(new_id)
        self.head = ids.get(self.head)
        return ids.get(parent)

    def _save_answer(self, user_id: int, done: Done | None) -> None:
        turn = self.companion.history[-1]
        self._add(user_id, "assistant", turn.answer, prompt=turn.prompt, sources=turn.sources,
                  timings=done.timings if done else {"stopped": True}, tokens=done.tokens if done else {},
                  model=done.model if done else "")
        self._remember(turn.question, user_id)

    def _remember(self, question: str, message_id: int) -> None:
        """Distil what the reader said about themselves (after the answer: the reader is not kept waiting)."""
        if not self.settings.memory:
            return
        try:
            distil = memories.DISTILLERS.create(self.settings.memory_distiller)
            llm = self.companion.llm if self.settings.memory_distiller == "model" else None
            facts = distil(question, llm=llm, lang=self.card.lang)
            memories.remember(self.store, self.reader, self.card.id, facts, self.id, message_id)
        except Exception as exc:  # a memory never costs the reader her answer
            self.warning = f"What you said could not be remembered ({exc})."
            log.warning(self.warning)

    # ---- the conversation ---------------------------------------------------------------
    def turn(self, question: str, callbacks: Any = None, **sampling: Any) -> Iterator[Event]:
        """Answer ``question`` as Companion.turn does; the question is saved before, the answer after."""
        question = question.strip()
        if not question:
            return
        if not self._rewound:
            self._sync()
        self._rewound = False
        head = self.messages.get(self.head) if self.head is not None else None
        if head is not None and head.role == "user" and head.content == question:
            user_id = head.id  # answered again: a new swipe beside her earlier answers
        else:
            parent = head.parent_id if head is not None and head.role == "user" else self.head
            user_id = self._add(parent, "user", question)
        inner = self.companion.turn(question, callbacks=callbacks, **sampling)
        before = len(self.companion.history)
        saved = False
        try:
            for event in inner:
                if isinstance(event, Done):
                    self._save_answer(user_id, event)
                    saved = True
                yield event
        finally:
            inner.close()  # a stopped answer is recorded by the Companion as far as it was shown
            if not saved and len(self.companion.history) > before:
                self._save_answer(user_id, None)

    def rewind(self, message_id: int | None) -> None:
        """The next turn continues from ``message_id`` (a question: answer it again; an answer or None: a new
        question there). Nothing is written until that turn is."""
        if message_id is not None and message_id not in self.messages:
            raise ConversationError(f"Message {message_id} is not part of this conversation; reload the page.")
        self.head = message_id
        self._rewound = True
        self.companion.restore(turns_of(self.path()))

    def regenerate(self) -> str:
        """Prepare a new answer to the last question (the old ones stay as swipes); returns that question
        for the next ``turn``."""
        head = self.messages.get(self.head) if self.head is not None else None
        if head is None:
            raise ConversationError("There is no question to answer again yet.")
        question = head if head.role == "user" else self.messages[head.parent_id]
        self.rewind(question.id)
        return question.content

    def edit(self, message_id: int) -> None:
        """Prepare to ask a new version of question ``message_id``: the next ``turn`` starts a branch beside it."""
        msg = self.messages.get(message_id)
        if msg is None or msg.role != "user":
            raise ConversationError(f"Message {message_id} is not a question of this conversation; reload the page.")
        self.rewind(msg.parent_id)

    def select(self, message_id: int) -> None:
        """Show (and continue from) an alternative: a swipe or a branch, down to its latest message."""
        if message_id not in self.messages:
            raise ConversationError(f"Message {message_id} is not part of this conversation; reload the page.")
        kids = children(self.messages)
        while kids.get(message_id):
            message_id = max(kids[message_id])  # the most recent continuation
        self.head = message_id
        self._rewound = False
        if self.id is not None:
            self.store.set_head(self.id, message_id)
        self.companion.restore(turns_of(self.path()))

    def delete_turn(self, user_message_id: int) -> None:
        """Delete one question and her answers to it; what followed stays, after the turn before."""
        if self.id is None:
            return
        self.store.delete_turn(self.id, user_message_id)
        self.reload()

    def rename(self, title: str) -> None:
        if self.id is not None:
            self.store.rename(self.id, title)

    def delete(self) -> None:
        """Delete the whole conversation (what she remembers about the reader stays)."""
        if self.id is not None:
            self.store.delete(self.id)
        self.id, self.head, self.messages = None, None, {}
        self.companion.reset()

    # ---- export -------------------------------------------------------------------------
    def export_json(self) -> dict:
        return dict(self.companion.export_json(), conversation=self.id, title=self.title, reader=self.reader)

    def export_markdown(self) -> str:
        return self.companion.export_markdown()


def open_store() -> tuple[ConversationStore, str]:
    """The default store, or (when its file cannot be used) an in-memory one with the reason why."""
    try:
        return default_store(), ""
    except ConversationError as exc:
        return ConversationStore.in_memory(), f"{exc}"


def open_or_create(character: str | Card, user: str | None = None, mode: str | None = None,
                   conversation_id: int | str | None = None, *, llm: Any = None, settings: Settings | None = None,
                   store: ConversationStore | None = None, k: int | None = None,
                   budget: Budget | None = None) -> SavedConversation:
    """The one entry point: reader ``user``'s conversation with ``character``.

    ``conversation_id``: None or "new" starts one (saved at its first question), "last" continues the
    reader's latest with her (in ``mode`` if given), a number continues that one (it must be this reader's,
    with this character). ``mode`` None means the conversation's own (reader for a new one)."""
    settings = settings or load_settings()
    reader = reader_name(user, settings.reader)
    store = store or default_store()
    cid = character.id if isinstance(character, Card) else character
    info = None
    if conversation_id == "last":
        found = store.list(cid, reader, mode, limit=1)
        info = found[0] if found else None
    elif conversation_id not in (None, "", "new"):
        try:
            number = int(conversation_id)
        except (TypeError, ValueError):
            raise ConversationError(f"'{conversation_id}' is not a conversation id; use a number, 'new' or 'last'.") \
                from None
        info = store.get(number)
        if info is None or info.character != cid or info.reader != reader:
            raise ConversationError(f"There is no conversation {number} of reader '{reader}' with '{cid}'; "
                                    f"`python ragchat.py --list {cid} --user READER` lists them.")
    if info is not None and mode and info.mode != mode:
        raise ConversationError(f"Conversation {info.id} is in {info.mode} mode, not {mode}; continue it in "
                                f"{info.mode} mode or start a new one.")
    companion = Companion(character, mode=info.mode if info else mode or "reader", llm=llm, settings=settings, k=k,
                          budget=budget)
    return SavedConversation(companion, store, reader, info.id if info else None, settings)
