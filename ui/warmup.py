"""Load the chat model and her prompt heads while the page starts, not on the first question."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import streamlit as st

from characters import Card
from settings import Settings

log = logging.getLogger("zhiyin.app")


@dataclass
class Warmup:
    """What is still loading, per (backend, model, character); read by every session of the process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    status: dict[tuple, str] = field(default_factory=dict)  # key -> "" when ready, else what is loading
    errors: dict[tuple, str] = field(default_factory=dict)


@st.cache_resource
def _warmup() -> Warmup:
    return Warmup()


def _work(state: Warmup, key: tuple, card: Card, settings: Settings, gen_lock: threading.Lock) -> None:
    from llm import get_chat_model
    from prompting import MODES
    from ragchat import Companion

    try:
        state.status[key] = "loading the chat model"
        model = get_chat_model(settings)
        if hasattr(model, "prepare_prefix"):
            for mode in MODES.names():
                state.status[key] = f"preparing {card.name}'s first answer ({mode})"
                with gen_lock:  # one slot: never save a state while another tab is answering
                    Companion(card, mode=mode, llm=model, settings=settings).prepare_prefix()
        state.status[key] = f"reading {card.name}'s book for the words of her world"
        Companion(card, mode="roleplay", llm=model, settings=settings).warm()
        state.status[key] = ""
    except Exception as exc:  # shown as a sentence; the first question then reports it properly
        state.errors[key] = str(exc)
        state.status[key] = ""
        return
    try:  # after "ready": a typed question needs none of it; the microphone's first would wait ~7 s
        from voice import priming

        priming.warm(card)
    except Exception as exc:  # the microphone mines it again when first used, and reports a failure there
        log.warning("the microphone's book words were not prepared: %s", exc)


def warm_up(card: Card, settings: Settings, gen_lock: threading.Lock) -> str:
    """Start warming up for this character (once per process); returns what is still loading ('' = ready)."""
    state = _warmup()
    key = (settings.llm_backend, settings.llm_model, settings.threads, card.id)
    with state.lock:
        if key not in state.status:
            state.status[key] = "starting"
            threading.Thread(target=_work, args=(state, key, card, settings, gen_lock), daemon=True,
                             name=f"warmup-{card.id}").start()
    return state.status.get(key, "")
