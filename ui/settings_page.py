"""The Settings page: model, temperatures, voice (offline unless the person turns the online voice on), video."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from settings import Settings
from ui.guard import may_edit

VIDEO_SIZES = [256, 512]


def show(settings: Settings, flash: Callable[[str, str], None]) -> None:
    from llm import BACKENDS
    from voice import TTS_ENGINES

    st.header("Settings")
    st.caption("These apply to this browser session; defaults come from settings.toml and ZHIYIN_* variables. "
               "Changing them starts a new conversation.")
    allowed = may_edit()
    backends = BACKENDS.names()
    engines = ["auto", *TTS_ENGINES.names()]
    with st.form("settings"):
        backend = st.selectbox("Chat model backend", backends, key="set_backend",
                               index=backends.index(settings.llm_backend) if settings.llm_backend in backends else 0)
        model = st.text_input("Model", value=settings.llm_model, key="set_model",
                              help="llamacpp: qwen2.5-1.5b (default), qwen2.5-0.5b or a .gguf path; "
                                   "transformers: a model folder; openai: the server's model name.")
        temperature = st.slider("Temperature (role-play)", 0.0, 1.5, float(settings.temperature), 0.05,
                                key="set_temperature")
        reader_temperature = st.slider("Temperature (reader: low copies names exactly)", 0.0, 1.5,
                                       float(settings.reader_temperature), 0.05, key="set_reader_temperature")
        engine = st.selectbox("Voice engine", engines, key="set_engine",
                              index=engines.index(settings.tts_engine) if settings.tts_engine in engines else 0)
        online = st.toggle("Use Microsoft's online voices when reachable", value=bool(settings.online_voice),
                           key="set_online_voice",
                           help="Off by default: every answer is then spoken on this machine. On, the text of "
                                "each answer is sent to Microsoft's edge-tts service to be spoken.")
        if online:
            st.caption("⚠ With this on, the text of every answer is sent to Microsoft to be spoken.")
        size = st.radio("Video size", VIDEO_SIZES, horizontal=True, key="set_size",
                        index=VIDEO_SIZES.index(settings.video_size) if settings.video_size in VIDEO_SIZES else 0)
        if st.form_submit_button("Apply", disabled=not allowed):
            st.session_state["overrides"] = {
                "llm_backend": backend, "llm_model": model.strip(), "temperature": temperature,
                "reader_temperature": reader_temperature, "tts_engine": engine, "online_voice": online,
                "video_size": size}
            flash("success", "Settings applied; a new conversation started.")
            st.rerun()
