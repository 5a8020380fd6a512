"""Zhiyin's page: pick a character, ask about her book or chat with her, hear and see her answer.

Start it with ``python start.py`` (prepares the model and the built-in stores first), or
``streamlit run app.py``. This file only arranges widgets; the logic lives in ``ui/`` and the
stage modules (ragchat, knowledge_base, voice, talking_head).
"""
from __future__ import annotations

import streamlit as st

from characters import Card, avatar_path, list_characters
from prompting import MODES
from settings import Settings, load_settings
from ui import chat_page, errors, history, knowledge_page, settings_page

MODE_LABELS = {"reader": "📖 Ask about the book", "roleplay": "🎭 Chat with her"}
PAGES = ["Chat", "Knowledge", "Settings"]

st.set_page_config(page_title="知音 Zhiyin", page_icon="📖", layout="wide")
state = st.session_state


def flash(kind: str, text: str) -> None:
    """A message shown once, after the next rerun (e.g. after creating a character)."""
    state.setdefault("flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in state.pop("flash", []):
        getattr(st, kind)(text)


def current_settings() -> Settings | None:
    """This session's settings (settings.toml < ZHIYIN_* < the Settings page), or None with an error shown."""
    try:
        return load_settings(**state.get("overrides", {}))
    except ValueError as exc:
        st.error(f"{exc} Fix or delete that settings.toml, then reload the page.")
        return None


# ------------------------------------------------------------------------------ sidebar
def sidebar(cards: dict[str, Card]) -> tuple[str, Card, str]:
    """Page, character and mode pickers, voice/video toggles, export and new-conversation buttons."""
    sb = st.sidebar
    sb.title("知音 Zhiyin")
    page = sb.radio("Page", PAGES, horizontal=True, key="page", label_visibility="collapsed")
    if state.get("pending_character") in cards:  # set before the picker exists (Streamlit's rule)
        state["character"] = state.pop("pending_character")
    cid = sb.selectbox("Character", list(cards), key="character", format_func=lambda c: cards[c].name)
    card = cards[cid]
    portrait = avatar_path(card)
    if portrait:
        sb.image(str(portrait), width=160)
    sb.caption(card.description or card.source_work)
    mode = sb.radio("Mode", MODES.names(), key="mode", format_func=lambda m: MODE_LABELS.get(m, m))
    sb.toggle("🔊 Speak answers", value=True, key="voice")
    sb.toggle("🎬 Talking-head video (slow on CPU)", value=False, key="video")
    return page, card, mode


# --------------------------------------------------------------------------------- chat
# The chat page and its sidebar parts (conversations, memories) live in ui/chat_page.py and ui/history.py.


# --------------------------------------------------------------------------------- main
def main() -> None:
    cards = {c.id: c for c in list_characters()}
    if not cards:
        st.error("No characters found; run `python start.py` once, or create one with "
                 "`python gen_chroma.py build ID PATH/TO/BOOK.txt --name NAME`.")
        return
    settings = current_settings()
    if settings is not None:
        history.restore_from_url(settings)  # a reload reopens the reader's conversation (before the pickers)
    page, card, mode = sidebar(cards)
    show_flash()
    if settings is None:
        return
    {"Chat": lambda: chat_page.chat_page(card, mode, settings), "Knowledge": lambda: knowledge_page.show(card, flash),
     "Settings": lambda: settings_page.show(settings, flash, card)}[page]()


try:
    main()
except Exception as exc:  # the last net: a sentence on the page, the traceback in the log
    # (Streamlit's rerun/stop signals are BaseExceptions, so they pass through.)
    st.error(errors.message(exc, "drawing the page"))
