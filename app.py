"""Zhiyin's page: pick a character, ask about her book or chat with her, hear and see her answer.

Start it with ``python start.py`` (prepares the model and the built-in stores first), or
``streamlit run app.py``. This file only arranges widgets; the logic lives in ``ui/`` and the
stage modules (ragchat, knowledge_base, voice, talking_head).
"""
from __future__ import annotations

import hashlib
import json

import streamlit as st

from characters import Card, avatar_path, list_characters
from llm import BACKENDS
from prompting import MODES
from settings import Settings, load_settings
from events import Clip, Done, Speech, StageError, TextDelta
from pipeline import FaceStage, Pipeline, VoiceStage
from ui import chat, errors, knowledge, resources, warmup

MODE_LABELS = {"reader": "📖 Ask about the book", "roleplay": "🎭 Chat with her"}
PAGES = ["Chat", "Knowledge", "Settings"]
VIDEO_SIZES = [256, 512]

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


def sidebar_conversation(conv: chat.Conversation) -> None:
    sb = st.sidebar
    if sb.button("🆕 New conversation", use_container_width=True):
        conv.restart()
        st.rerun()
    cols = sb.columns(2)
    bot = conv.companion
    cols[0].download_button("⬇ Markdown", bot.export_markdown(), file_name=f"{bot.card.id}-conversation.md",
                            mime="text/markdown", use_container_width=True)
    cols[1].download_button("⬇ JSON", json.dumps(bot.export_json(), ensure_ascii=False, indent=1),
                            file_name=f"{bot.card.id}-conversation.json", mime="application/json",
                            use_container_width=True)


# --------------------------------------------------------------------------------- chat
def get_conversation(card: Card, mode: str, settings: Settings) -> chat.Conversation | None:
    """This session's conversation; a new one when the character or settings change, same one on a mode switch."""
    conv: chat.Conversation | None = state.get("conv")
    key = chat.conversation_key(card, mode, settings)
    if conv is not None and conv.key[0] == key[0] and conv.key[2] == key[2]:
        if conv.key[1] != mode:
            conv.companion.set_mode(mode)
            conv.key = key
            conv.restart()
        return conv
    try:
        conv = chat.open_conversation(card, mode, settings, llm=resources.chat_model(settings))
    except Exception as exc:
        st.error(errors.message(exc, "loading the chat model"))
        return None
    state["conv"] = conv
    return conv


def show_message(msg: chat.Message, avatar: str | None) -> None:
    with st.chat_message(msg.role, avatar=avatar if msg.role == "assistant" else None):
        st.markdown(msg.content)
        show_media(msg)


def show_media(msg: chat.Message, autoplay: bool = False) -> None:
    for clip in msg.video:
        st.video(clip, format="video/mp4")
    if not msg.video:
        for i, wav in enumerate(msg.audio):
            st.audio(wav, format="audio/wav", autoplay=autoplay and i == 0)
    if msg.note:
        st.caption(msg.note)
    if msg.sources:
        with st.expander(f"Sources ({len(msg.sources)})"):
            st.markdown(chat.sources_markdown(msg.sources))


def voice_question(card: Card, settings: Settings) -> str:
    """The microphone's question, transcribed once per recording ('' when there is none)."""
    lang = card.lang
    recording = st.sidebar.audio_input("🎙 Speak your question", key="mic")
    if recording is None:
        return ""
    data = recording.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    if state.get("mic_done") == digest:
        return ""
    state["mic_done"] = digest
    try:
        from voice import transcribe

        with st.spinner("Listening…"):
            return transcribe(data, lang=lang, engine=settings.asr_engine).text
    except Exception as exc:
        st.error(errors.message(exc, "transcribing your question"))
        return ""


def turn_pipeline(conv: chat.Conversation, settings: Settings) -> Pipeline:
    """This turn's pipeline: the session's conversation, spoken when voice is on, animated when video is too."""
    card = conv.companion.card
    voice = VoiceStage(card, settings.tts_engine) if state.get("voice") else None
    face = None
    if voice and state.get("video"):
        portrait = avatar_path(card)
        if portrait is None:
            st.caption(f"{card.name} has no portrait, so no video; add one on the Knowledge page.")
        else:
            face = FaceStage(resources.talking_head(str(portrait), settings.video_size), resources.talking_head_lock())
    return Pipeline(conv.companion, voice, face)


def show_spoken(event: Speech | Clip, msg: chat.Message, box) -> None:
    """Put a finished sentence (audio, or its clip when video is on) on the page; the first one plays."""
    if isinstance(event, Speech):
        first = not msg.audio
        msg.audio.append(event.wav)
        if not state.get("video"):
            box.audio(event.wav, format="audio/wav", autoplay=first)
    else:
        first = not msg.video
        msg.video.append(event.mp4)
        box.video(event.mp4, format="video/mp4", autoplay=first)


def answer(conv: chat.Conversation, question: str, settings: Settings, avatar: str | None) -> None:
    conv.messages.append(chat.Message("user", question))
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant", avatar=avatar):
        text_box, media_box = st.container(), st.container()
        msg = chat.Message("assistant", "")
        waiting = lambda: st.spinner("Another conversation is being answered; yours is next…")  # noqa: E731
        try:
            pipe = turn_pipeline(conv, settings)
        except Exception as exc:
            st.error(errors.message(exc, "preparing the voice"))
            pipe = Pipeline(conv.companion)
        done: Done | None = None

        def tokens():
            nonlocal done
            for event in pipe.turn(question):
                if isinstance(event, TextDelta):
                    yield event.text
                elif isinstance(event, (Speech, Clip)):
                    show_spoken(event, msg, media_box)
                elif isinstance(event, StageError):
                    media_box.error(errors.message(event.error, f"{'speaking' if event.stage == 'speech' else 'animating'} the answer"))
                elif isinstance(event, Done):
                    done = event

        try:
            with chat.one_at_a_time(resources.generation_lock(), waiting):
                text = text_box.write_stream(tokens())
        except Exception as exc:
            st.error(errors.message(exc, "answering"))
            return
        text = text if isinstance(text, str) else "".join(map(str, text))
        if done is None:
            return
        t = done.timings
        timing = f"{t.get('first_token_ms', 0) / 1000:.1f} s to the first word, {t.get('total_ms', 0) / 1000:.1f} s in all"
        note = "No passage of the book matched this question. " if done.warning else ""
        msg.content, msg.sources, msg.note = text, list(done.sources), note + timing
        conv.messages.append(msg)
        if msg.note:
            st.caption(msg.note)
        if msg.sources:
            with st.expander(f"Sources ({len(msg.sources)})"):
                st.markdown(chat.sources_markdown(msg.sources))


def chat_page(card: Card, mode: str, settings: Settings) -> None:
    st.header(f"{card.name}" + (f" · {card.source_work}" if card.source_work else ""))
    conv = get_conversation(card, mode, settings)
    portrait = avatar_path(card)
    avatar = str(portrait) if portrait else None
    ready = conv is not None and chat.has_knowledge(card.id)
    if conv is not None:
        sidebar_conversation(conv)
        for msg in conv.messages:
            show_message(msg, avatar)
    if conv is not None and not ready:
        st.warning(chat.no_knowledge_message(card))
    loading = warmup.warm_up(card, settings, resources.generation_lock())
    if loading:
        st.caption(f"⏳ Still {loading}; a question asked now waits for it.")
    spoken = voice_question(card, settings)
    typed = st.chat_input(f"Ask {card.name}…" if ready else "Add a book on the Knowledge page first")
    question = (typed or spoken or "").strip()
    if question and conv is not None:
        if not ready:
            st.error(chat.no_knowledge_message(card))
            return
        answer(conv, question, settings, avatar)


# ---------------------------------------------------------------------------- knowledge
def progress_bar():
    bar = st.progress(0.0, text="Starting…")

    def report(stage: str, done: int, total: int) -> None:
        frac, label = knowledge.progress_text(stage, done, total)
        bar.progress(frac, text=label)

    return report


def uploads_of(files) -> list[tuple[str, bytes]]:
    return [(f.name, f.getvalue()) for f in (files or [])]


@st.cache_data(max_entries=16, show_spinner="Reading the upload…")
def inspect_upload(name: str, data: bytes) -> knowledge.UploadInfo:
    # Cached: every rerun would otherwise decode a 50 MB book again.
    return knowledge.inspect_upload(name, data)


def show_detected(uploads: list[tuple[str, bytes]]) -> None:
    for name, data in uploads:
        info = inspect_upload(name, data)
        (st.success if info.ok else st.error)(info.summary())


def knowledge_page(card: Card) -> None:
    st.header(f"What {card.name} knows")
    status = knowledge.store_status(card.id)
    if "error" in status:
        st.warning(status["error"])
    else:
        cols = st.columns(4)
        cols[0].metric("Books", status["files"])
        cols[1].metric("Passages", f"{status['chunks']:,}")
        cols[2].metric("Characters", f"{status['characters']:,}")
        cols[3].metric("Search model", status["embedder"])
        st.caption(f"Built {status['built']} · version {status['version']} · "
                   + knowledge.upgrade_text(status.get("upgrade", {})))
        if "e5" not in status["indexes"] and st.button("Upgrade the search index in the background (e5)"):
            from gen_chroma import start_background_upgrade

            pid = start_background_upgrade(card.id)
            st.info(f"Upgrade started (process {pid}); this page shows its progress when you come back.")

    st.subheader("Add books")
    files = st.file_uploader("Books (.txt, .md or .epub; any common encoding)", accept_multiple_files=True,
                             key="books")
    uploads = uploads_of(files)
    show_detected(uploads)
    if st.button(f"Add to {card.name} and rebuild", disabled=not uploads, type="primary"):
        try:
            report, _ = knowledge.add_books(card.id, uploads, progress=progress_bar())
            st.success(f"Rebuilt: {report.files} books, {report.chunks:,} passages "
                       f"({len(report.added)} added, {len(report.changed)} changed) in {report.seconds:.1f} s.")
        except Exception as exc:
            st.error(errors.message(exc, "rebuilding the knowledge store"))

    knowledge.card_import_section(card, flash)
    st.subheader("Create a new character")
    with st.form("new_character", clear_on_submit=False):
        name = st.text_input("Name", placeholder="e.g. 薛宝钗 or Jane Bennet")
        cid = st.text_input("Id (optional; letters, digits, '-' or '_')")
        lang = st.selectbox("Language", ["auto", "zh", "en"])
        description = st.text_input("One-line description")
        books = st.file_uploader("Her books", accept_multiple_files=True, key="new_books")
        portrait = st.file_uploader("Portrait (PNG, JPEG or WebP)", key="new_portrait")
        submitted = st.form_submit_button("Create")
    if submitted:
        try:
            new, report, infos = knowledge.create_character(
                name, uploads_of(books), cid, (portrait.name, portrait.getvalue()) if portrait else None,
                description, None if lang == "auto" else lang, progress=progress_bar())
        except Exception as exc:
            st.error(errors.message(exc, "creating the character"))
            return
        for info in infos:
            if not info.ok:
                flash("warning", info.summary())
        flash("success", f"Created {new.name} ({report.chunks:,} passages); she is selected now.")
        state["pending_character"] = new.id
        st.rerun()


# ----------------------------------------------------------------------------- settings
def settings_page(settings: Settings) -> None:
    from voice import TTS_ENGINES

    st.header("Settings")
    st.caption("These apply to this browser session; defaults come from settings.toml and ZHIYIN_* variables. "
               "Changing them starts a new conversation.")
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
        size = st.radio("Video size", VIDEO_SIZES, horizontal=True, key="set_size",
                        index=VIDEO_SIZES.index(settings.video_size) if settings.video_size in VIDEO_SIZES else 0)
        if st.form_submit_button("Apply"):
            state["overrides"] = {"llm_backend": backend, "llm_model": model.strip(), "temperature": temperature,
                                  "reader_temperature": reader_temperature, "tts_engine": engine, "video_size": size}
            flash("success", "Settings applied; a new conversation started.")
            st.rerun()


# --------------------------------------------------------------------------------- main
def main() -> None:
    cards = {c.id: c for c in list_characters()}
    if not cards:
        st.error("No characters found; run `python start.py` once, or create one with "
                 "`python gen_chroma.py build ID PATH/TO/BOOK.txt --name NAME`.")
        return
    page, card, mode = sidebar(cards)
    show_flash()
    settings = current_settings()
    if settings is None:
        return
    {"Chat": lambda: chat_page(card, mode, settings), "Knowledge": lambda: knowledge_page(card),
     "Settings": lambda: settings_page(settings)}[page]()


try:
    main()
except Exception as exc:  # the last net: a sentence on the page, the traceback in the log
    # (Streamlit's rerun/stop signals are BaseExceptions, so they pass through.)
    st.error(errors.message(exc, "drawing the page"))
