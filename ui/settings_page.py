"""The Settings page: model, temperatures, voice (offline unless the person turns the online voice on), video,
and her fine-tuned voice (a LoRA adapter: trained here where a CUDA GPU is, used with one switch)."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from characters import Card
from settings import Settings
from ui.guard import may_edit

VIDEO_SIZES = [256, 512]


def show(settings: Settings, flash: Callable[[str, str], None], card: Card | None = None) -> None:
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
            kept = {k: v for k, v in st.session_state.get("overrides", {}).items() if k == "llm_adapter"}
            st.session_state["overrides"] = kept | {
                "llm_backend": backend, "llm_model": model.strip(), "temperature": temperature,
                "reader_temperature": reader_temperature, "tts_engine": engine, "online_voice": online,
                "video_size": size}
            flash("success", "Settings applied; a new conversation started.")
            st.rerun()
    if card is not None:
        adapter_section(card, settings, flash, allowed)


def adapter_in_use(card: Card, settings: Settings) -> bool:
    return settings.llm_backend == "transformers" and settings.llm_adapter == card.id


def adapter_section(card: Card, settings: Settings, flash: Callable[[str, str], None], allowed: bool) -> None:
    """Train her LoRA adapter from her own lines (CUDA only; on CPU the page says so), and answer with it."""
    from finetune import job

    st.subheader(f"{card.name}'s voice, fine-tuned (LoRA)")
    now = job.status(card.id)
    ok, why = job.can_train()
    if now["live"]:
        after = now["eval"].get("after", {})
        before = now["eval"].get("before", {})
        loss = f" Held-out loss {before.get('loss')} → {after.get('loss')}." if after else ""
        st.write(f"Her adapter **{now['live']}** is ready.{loss}")
    else:
        st.write("She has no adapter yet: her answers come from the base model, her card and her book.")
    if now["running"]:
        st.info(f"Training her voice… {now['last'] or 'starting'}")
        st.button("Refresh", key="adapter_refresh")
    elif st.button("Train her voice", key="adapter_train", disabled=not (ok and allowed),
                   help="Finds her lines in her book and trains a LoRA adapter on them (QLoRA where bitsandbytes is "
                        "installed). Minutes on a GPU."):
        try:
            job.start(card.id)
            flash("success", f"Training {card.name}'s voice in the background; this page shows how it goes.")
        except job.JobError as exc:
            flash("error", str(exc))
        st.rerun()
    if not ok:
        st.caption(why)
    if now["live"] or adapter_in_use(card, settings):
        use = st.toggle("Answer with her adapter", value=adapter_in_use(card, settings), key="adapter_use",
                        disabled=not allowed, help="Runs the chat model with transformers and her adapter; on a CPU "
                                                   "that is several times slower than the default.")
        if use != adapter_in_use(card, settings):
            overrides = dict(st.session_state.get("overrides", {}))
            if use:
                overrides |= {"llm_backend": "transformers", "llm_model": "", "llm_adapter": card.id}
            else:
                overrides = {k: v for k, v in overrides.items() if k not in ("llm_backend", "llm_model", "llm_adapter")}
            st.session_state["overrides"] = overrides
            flash("success", "Her adapter is in use; a new conversation started." if use else
                  "Back to the default model; a new conversation started.")
            st.rerun()

