"""Heavy objects, created once per server process and shared by every browser session."""
from __future__ import annotations

import threading
from dataclasses import astuple, fields

import streamlit as st
from langchain_core.language_models import BaseChatModel

from settings import Settings


def settings_key(settings: Settings) -> tuple:
    """A hashable key for a Settings (st.cache_resource hashes plain tuples cheaply)."""
    return astuple(settings)


def settings_from_key(key: tuple) -> Settings:
    return Settings(**{f.name: v for f, v in zip(fields(Settings), key, strict=True)})


@st.cache_resource(show_spinner="Loading the chat model…")
def _chat_model(key: tuple) -> BaseChatModel:
    from llm import get_chat_model

    return get_chat_model(settings_from_key(key))


def chat_model(settings: Settings) -> BaseChatModel:
    """The chat model for these settings (one per distinct settings, per process)."""
    return _chat_model(settings_key(settings))


@st.cache_resource
def generation_lock() -> threading.Lock:
    """One answer generated at a time: llama.cpp's server has one slot, so two tabs must take turns."""
    return threading.Lock()


@st.cache_resource(show_spinner="Analysing the portrait…")
def talking_head(portrait: str, size: int):
    """One TalkingHead per portrait and size (face analysis and the warp rig are built once)."""
    from talking_head import TalkingHead

    return TalkingHead(portrait, size=size)


@st.cache_resource
def talking_head_lock() -> threading.Lock:
    # A TalkingHead carries a clock (blinks continue across sentences): one render at a time.
    return threading.Lock()
