"""Conversations that last: saved chats per (character, reader), swipes and branches, her memory of the reader.

The one entry point (the page, the CLI and the API all use it)::

    from conversations import open_or_create

    conv = open_or_create("daiyu", user="小雨", mode="roleplay", conversation_id=None)  # or "last", or an id
    for event in conv.turn("我叫小雨，最喜欢栀子花。"):   # the events of Companion.turn, saved as they happen
        ...
    conv.id                                               # set once the first question is saved

``Pipeline(conv, voice, face)`` speaks and animates a saved conversation like a plain Companion.
Where things are: schema.py (numbered migrations), store.py (the SQLite file), saved.py (a
Companion saved turn by turn), memory.py (distil and recall what a reader tells her). The design and
its measurements: docs/conversations.md.
"""
from conversations.memory import DISTILLERS, Fact, Recall, distil_rules
from conversations.saved import SavedConversation, Shown, open_or_create, open_store
from conversations.store import (
    ConversationError,
    ConversationInfo,
    ConversationStore,
    Memory,
    StoredMessage,
    default_store,
    reader_name,
)

__all__ = [
    "DISTILLERS", "ConversationError", "ConversationInfo", "ConversationStore", "Fact", "Memory", "Recall",
    "SavedConversation", "Shown", "StoredMessage", "default_store", "distil_rules", "open_or_create", "open_store",
    "reader_name",
]
