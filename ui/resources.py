"""Heavy objects, created once per server process and shared by every browser session."""
from __future__ import annotations

import hmac
import ipaddress
import threading

import streamlit as st
from langchain_core.language_models import BaseChatModel

from settings import Settings, load_settings


def chat_model(settings: Settings) -> BaseChatModel:
    """The chat model for these settings: a light object over the one model in memory (llm/resident.py).

    Not cached per settings: that kept every model ever chosen loaded. The weights load on the first
    answer and are freed when another model is loaded; a new temperature reuses them.
    """
    from llm import get_chat_model

    with st.spinner("Preparing the chat model…"):
        return get_chat_model(settings)


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


def _loopback(address: str | None) -> bool:
    """Whether Streamlit's ``server.address`` keeps the page on this machine."""
    if not address:
        return False  # unset: Streamlit listens on every network interface
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def editing_allowed(entered_password: str = "") -> tuple[bool, str]:
    """(allowed, why not) for the Settings and Knowledge pages' changes.

    On 127.0.0.1 only this machine's user reaches the page. Served further, anyone who can reach it
    could upload books or point the app at another model, so changes need the password
    (ZHIYIN_PASSWORD or ``password`` in settings.toml); without one set, those pages are read-only.
    """
    address = st.get_option("server.address")
    if _loopback(address):
        return True, ""
    try:
        secret = load_settings().password
    except ValueError as exc:
        return False, f"{exc} Changes are off until settings.toml is fixed."
    where = address or "every network interface"
    if not secret:
        return False, (f"This page is served on {where} without a password, so settings and books are read-only. "
                       "Set ZHIYIN_PASSWORD (or password in settings.toml) and restart, or serve on 127.0.0.1.")
    if entered_password and hmac.compare_digest(entered_password.encode(), secret.encode()):
        return True, ""
    return False, "Enter the password to change settings or books."
