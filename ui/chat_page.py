"""The Chat page: the conversation drawn from its saved path, each answer streamed, spoken and animated;
regenerate and page through her answers (swipes), edit a question (a new branch), delete a turn.

Buttons act in callbacks (``_act``): the action is applied before the messages are drawn again, so a
regenerated answer streams where the old one was."""
from __future__ import annotations

import hashlib

import streamlit as st

from characters import Card, avatar_path
from conversations import ConversationError
from events import Clip, Done, Sources, Speech, StageError, TextDelta
from pipeline import FaceStage, Pipeline, VoiceStage
from settings import Settings
from ui import chat, errors, history, resources, warmup

state = st.session_state
SHOWN = 40  # messages drawn at first: a 5,000-turn conversation opens at once; older ones on request


def get_conversation(card: Card, mode: str, settings: Settings, reader: str) -> chat.Conversation | None:
    """This session's conversation: the one asked for, the same one, or a new one on another character/reader/settings."""
    conv: chat.Conversation | None = state.get("conv")
    wanted = state.pop("open_id", None)
    key = chat.conversation_key(card, mode, settings, reader)
    if wanted is None and conv is not None:
        if conv.key == key:
            return conv
        if conv.key[0] == key[0] and conv.key[2:] == key[2:]:  # only the mode changed: a new conversation in it
            conv.companion.set_mode(mode)
            conv.restart()
            conv.key = key
            return conv
    try:
        llm = resources.chat_model(settings)
        try:
            conv = chat.open_conversation(card, mode, settings, llm, reader, wanted, history.store())
        except ConversationError as exc:  # gone or not this reader's: say so and start a new one
            st.warning(str(exc))
            conv = chat.open_conversation(card, mode, settings, llm, reader, None, history.store())
    except Exception as exc:
        st.error(errors.message(exc, "loading the chat model"))
        return None
    state["conv"] = conv
    for key in ("editing", "show_all", "confirm"):
        state.pop(key, None)
    return conv


# ----------------------------------------------------------------------------- actions
def _act(*action: object) -> None:
    state["chat_action"] = action


def apply_action(conv: chat.Conversation) -> tuple[str, bool] | None:
    """Apply a button's action; returns (question to answer now, whether its bubble must be drawn) if any."""
    action = state.pop("chat_action", None)
    if not action:
        return None
    saved = conv.saved
    try:
        match action:
            case ("select", int(mid)):
                saved.select(mid)
            case ("regenerate",):
                return saved.regenerate(), False
            case ("edit", int(mid)):
                state["editing"] = mid
            case ("send_edit", int(mid)):
                text = str(state.get(f"edit-text-{mid}", "")).strip()
                state.pop("editing", None)
                if text:
                    saved.edit(mid)
                    return text, True
            case ("cancel_edit",):
                state.pop("editing", None)
            case ("delete_turn", int(mid)):
                state["confirm"] = ("turn", mid)
            case ("confirm_delete_turn", int(mid)):
                state.pop("confirm", None)
                saved.delete_turn(mid)
            case ("keep_turn",):
                state.pop("confirm", None)
            case ("new",):
                conv.restart()
                state.pop("editing", None)
    except ConversationError as exc:
        st.error(str(exc))
    return None


# ------------------------------------------------------------------------------ drawing
def controls(msg: chat.Message, last: bool) -> None:
    """Under a message: page through its alternatives; edit/delete a question; regenerate the last answer."""
    if msg.id is None:
        return
    n = len(msg.alternatives)
    cols = st.columns([1, 1, 1, 1, 1, 6])
    if n > 1:
        pos = msg.position
        what = "answer" if msg.role == "assistant" else "version"
        cols[0].button("◀", key=f"prev-{msg.id}", disabled=pos == 0, help=f"The previous {what}",
                       on_click=_act, args=("select", msg.alternatives[max(0, pos - 1)]))
        cols[1].caption(f"{pos + 1}/{n}")
        cols[2].button("▶", key=f"next-{msg.id}", disabled=pos == n - 1, help=f"The next {what}",
                       on_click=_act, args=("select", msg.alternatives[min(n - 1, pos + 1)]))
    if msg.role == "user":
        cols[3].button("✏️", key=f"edit-{msg.id}", help="Edit: ask this differently (a new branch; this one stays)",
                       on_click=_act, args=("edit", msg.id))
        cols[4].button("🗑", key=f"delete-{msg.id}", help="Delete this question and her answers",
                       on_click=_act, args=("delete_turn", msg.id))
        if last:  # asked, but the answer failed: ask her again
            cols[5].button("🔄 Answer", key=f"regenerate-{msg.id}", on_click=_act, args=("regenerate",))
    elif last:
        cols[3].button("🔄", key=f"regenerate-{msg.id}", help="Regenerate: another answer (this one stays, ◀ ▶ to page)",
                       on_click=_act, args=("regenerate",))


def editor(msg: chat.Message) -> None:
    st.text_area("Your question, edited", value=msg.content, key=f"edit-text-{msg.id}")
    cols = st.columns(2)
    cols[0].button("Send as a new branch", key=f"send-edit-{msg.id}", type="primary", on_click=_act,
                   args=("send_edit", msg.id))
    cols[1].button("Cancel", key="cancel-edit", on_click=_act, args=("cancel_edit",))


def confirm_turn(msg: chat.Message) -> None:
    st.warning("Delete this question and her answers to it? What followed stays.")
    cols = st.columns(2)
    cols[0].button("Yes, delete", key=f"confirm-delete-{msg.id}", type="primary", on_click=_act,
                   args=("confirm_delete_turn", msg.id))
    cols[1].button("Keep it", key="keep-turn", on_click=_act, args=("keep_turn",))


def show_message(msg: chat.Message, avatar: str | None, last: bool) -> None:
    with st.chat_message(msg.role, avatar=avatar if msg.role == "assistant" else None):
        if msg.role == "user" and state.get("editing") == msg.id:
            editor(msg)
        else:
            st.markdown(msg.content)
        show_media(msg)
        if state.get("confirm") == ("turn", msg.id):
            confirm_turn(msg)
        else:
            controls(msg, last)


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


def voice_question(card: Card, settings: Settings, last_turn: str = "") -> str:
    """The microphone's question, transcribed once per recording ('' when there is none), primed with her
    names, her book's words and the last turn (voice/priming.py)."""
    recording = st.sidebar.audio_input("🎙 Speak your question", key="mic")
    if recording is None:
        return ""
    data = recording.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    if state.get("mic_done") == digest:
        return ""
    state["mic_done"] = digest
    try:
        from voice.priming import listen

        with st.spinner("Listening…"):
            return listen(data, card, last_turn, engine=settings.asr_engine).text
    except Exception as exc:
        st.error(errors.message(exc, "transcribing your question"))
        return ""


def turn_pipeline(conv: chat.Conversation, settings: Settings) -> Pipeline:
    """This turn's pipeline: the saved conversation, spoken when voice is on, animated when video is too."""
    card = conv.companion.card
    voice = VoiceStage(card, settings.tts_engine) if state.get("voice") else None
    face = None
    if voice and state.get("video"):
        portrait = avatar_path(card)
        if portrait is None:
            st.caption(f"{card.name} has no portrait, so no video; add one on the Knowledge page.")
        else:
            face = FaceStage(resources.talking_head(str(portrait), settings.video_size), resources.talking_head_lock())
    return Pipeline(conv.saved, voice, face)


def show_spoken(event: Speech | Clip, audio: list[bytes], video: list[bytes], box) -> None:
    """Put a finished sentence (audio, or its clip when video is on) on the page; the first one plays."""
    if isinstance(event, Speech):
        audio.append(event.wav)
        if not state.get("video"):
            box.audio(event.wav, format="audio/wav", autoplay=len(audio) == 1)
    else:
        video.append(event.mp4)
        box.video(event.mp4, format="video/mp4", autoplay=len(video) == 1)


def answer(conv: chat.Conversation, question: str, settings: Settings, avatar: str | None, draw_question: bool) -> None:
    user_box = st.chat_message("user") if draw_question else None
    if user_box is not None:
        user_box.markdown(question)
    with st.chat_message("assistant", avatar=avatar):
        text_box, media_box = st.container(), st.container()
        audio: list[bytes] = []
        video: list[bytes] = []
        try:
            pipe = turn_pipeline(conv, settings)
        except Exception as exc:
            st.error(errors.message(exc, "preparing the voice"))
            pipe = Pipeline(conv.saved)
        done: Done | None = None
        lore: list[str] = []  # the card's world-info entries that fired for this answer
        waiting = lambda: st.spinner("Another conversation is being answered; yours is next…")  # noqa: E731

        def tokens():
            nonlocal done
            for event in pipe.turn(question):
                if isinstance(event, TextDelta):
                    yield event.text
                elif isinstance(event, Sources):
                    lore[:] = event.lore
                elif isinstance(event, (Speech, Clip)):
                    show_spoken(event, audio, video, media_box)
                elif isinstance(event, StageError):
                    doing = "speaking" if event.stage == "speech" else "animating"
                    media_box.error(errors.message(event.error, f"{doing} the answer"))
                elif isinstance(event, Done):
                    done = event

        try:
            with chat.one_at_a_time(resources.generation_lock(), waiting):
                text_box.write_stream(tokens())
        except Exception as exc:
            st.error(errors.message(exc, "answering"))
            return
        head = conv.saved.head
        if done is None or head is None:
            return
        conv.media[head] = (audio, video)
        if done.warning:
            conv.notes[head] = "No passage of the book matched this question. "
        if lore:  # which lorebook entries shaped this answer (users of character cards ask for this)
            conv.notes[head] = conv.notes.get(head, "") + "World info: " + "; ".join(lore) + ". "
        st.caption(conv.notes.get(head, "") + chat.timing_note(done.timings))
        if done.sources:
            with st.expander(f"Sources ({len(done.sources)})"):
                st.markdown(chat.sources_markdown(done.sources))
        shown = conv.messages
        controls(shown[-1], last=True)
    if user_box is not None and len(shown) > 1:
        with user_box:  # the question's own buttons, now that it is saved
            controls(shown[-2], last=False)


def sidebar(conv: chat.Conversation, sb) -> None:
    """Drawn last, into its place in the sidebar, so the list and the memories include this turn."""
    sb.button("🆕 New conversation", use_container_width=True, on_click=_act, args=("new",))
    history.conversation_list(conv, sb)
    history.manage(conv, sb)
    history.export(conv, sb)
    history.memories(conv, sb)


def chat_page(card: Card, mode: str, settings: Settings) -> None:
    st.header(f"{card.name}" + (f" · {card.source_work}" if card.source_work else ""))
    if settings.llm_backend == "transformers" and settings.llm_adapter:  # where her fine-tuned voice is on
        st.caption(f"🎓 Answering with the fine-tuned adapter '{settings.llm_adapter}' (LoRA, transformers); "
                   "turn it off on the Settings page.")
    reader = history.reader_box(settings)
    if history.store_problem():
        st.warning(history.store_problem() + " This session's conversation is kept in memory only.")
    conv = get_conversation(card, mode, settings, reader)
    portrait = avatar_path(card)
    avatar = str(portrait) if portrait else None
    greetings = [g for g in (card.greeting, *card.greetings) if g]
    if conv is not None and len(greetings) > 1:  # a character card's alternate greetings, offered as choices
        conv.companion.greeting_index = st.sidebar.selectbox(
            "Her greeting", range(len(greetings)), key=f"greeting-{card.id}",
            format_func=lambda i: greetings[i][:60] + ("…" if len(greetings[i]) > 60 else ""))
    ready = conv is not None and chat.has_knowledge(card.id)
    pending = None
    slot = st.sidebar.container()  # the conversation parts of the sidebar, filled at the end
    if conv is not None:
        pending = apply_action(conv)
        messages = conv.messages
        start = 0 if state.get("show_all") else max(0, len(messages) - SHOWN)
        if start:
            st.button(f"Show {start} earlier messages", key="show_earlier", on_click=state.update,
                      kwargs={"show_all": True})
        for i, msg in enumerate(messages[start:], start):
            show_message(msg, avatar, last=i == len(messages) - 1 and pending is None)
    if conv is not None and not ready:
        st.warning(chat.no_knowledge_message(card))
    loading = warmup.warm_up(card, settings, resources.generation_lock())
    if loading:
        st.caption(f"⏳ Still {loading}; a question asked now waits for it.")
    last = conv.messages[-2:] if conv is not None and len(conv.messages) > 1 else []
    spoken = voice_question(card, settings, " ".join(m.content for m in last))
    typed = st.chat_input(f"Ask {card.name}…" if ready else "Add a book on the Knowledge page first")
    question, draw = pending if pending else ((typed or spoken or "").strip(), True)
    if question and conv is not None:
        if ready:
            answer(conv, question, settings, avatar, draw)
        else:
            st.error(chat.no_knowledge_message(card))
    if conv is not None:
        if conv.saved.warning:
            st.warning(conv.saved.warning)
            conv.saved.warning = ""
        sidebar(conv, slot)
        history.set_url(conv)
