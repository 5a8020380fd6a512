"""The sidebar's conversation parts: who is reading, her past conversations (resume, rename, delete),
export, and what she remembers about the reader (correct or forget). Widgets only; the logic is in
``conversations``. Actions run in widget callbacks, before the page is drawn again."""
from __future__ import annotations

import datetime
import json

import streamlit as st

from conversations import ConversationError, ConversationInfo, ConversationStore, open_store, reader_name
from settings import Settings
from ui import chat, errors

state = st.session_state


def store() -> ConversationStore:
    """The conversation store of this session: the shared file, or an in-memory one when the file is unusable."""
    if "fallback_store" in state:
        return state["fallback_store"]
    found, problem = open_store()
    if problem:  # damaged or locked: chat on in memory, and say so on every page draw
        state["fallback_store"], state["store_problem"] = found, problem
    return found


def store_problem() -> str:
    return state.get("store_problem", "")


def set_url(conv: chat.Conversation | None) -> None:
    """Keep the reader and the conversation in the address, so a reload (or a restart) reopens them."""
    params = {"reader": state.get("reader", "")}
    if conv is not None and conv.saved.id is not None and conv.saved.store.persistent:
        params["c"] = str(conv.saved.id)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def restore_from_url(settings: Settings) -> None:
    """A session's first draw: the reader and the conversation named in the address (before the pickers exist)."""
    if state.get("url_read"):
        return
    state["url_read"] = True
    try:
        state["reader"] = reader_name(st.query_params.get("reader"), settings.reader)
    except ConversationError:
        state["reader"] = settings.reader
    wanted = st.query_params.get("c")
    if not wanted or not wanted.isdigit():
        return
    try:
        info = store().get(int(wanted))
    except ConversationError:
        return
    if info is not None and info.reader == state["reader"]:
        open_later(info)


def open_later(info: ConversationInfo) -> None:
    """Ask the next draw to open ``info`` (its character and mode are selected first)."""
    state["pending_character"] = info.character
    state["mode"] = info.mode
    state["open_id"] = info.id


def reader_box(settings: Settings) -> str:
    """The reader's name (a local profile: her conversations and memories are kept per name)."""
    state.setdefault("reader", settings.reader)
    typed = st.sidebar.text_input("👤 Your name", key="reader", max_chars=128,
                                  help="Your conversations and what she remembers are kept under this name.")
    try:
        return reader_name(typed, settings.reader)
    except ConversationError as exc:
        st.sidebar.error(str(exc))
        return settings.reader


def when(stamp: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(stamp).astimezone()
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M")


def label(info: ConversationInfo) -> str:
    icon = "📖" if info.mode == "reader" else "🎭"
    return f"{icon} {info.title or '(untitled)'} · {when(info.updated_at)} · {info.messages} messages"


def _pick(key: str, infos: dict[int, ConversationInfo]) -> None:
    chosen = state.get(key)
    if chosen in infos:
        open_later(infos[chosen])


def conversation_list(conv: chat.Conversation, sb) -> None:
    """Her past conversations with this reader; choosing one resumes it."""
    saved = conv.saved
    try:
        infos = {i.id: i for i in saved.store.list(saved.card.id, saved.reader, limit=200)}
    except ConversationError as exc:
        sb.caption(str(exc))
        return
    options: list[int | None] = ([None] if saved.id is None else []) + list(infos)
    if saved.id is not None and saved.id not in infos:
        options.insert(0, saved.id)
    key = f"conversations-{saved.card.id}-{saved.id}"  # a new key when the open conversation changes
    sb.selectbox("Conversations", options, index=options.index(saved.id), key=key,
                         format_func=lambda i: "🆕 (this new conversation)" if i is None else
                         label(infos[i]) if i in infos else f"#{i}",
                         on_change=_pick, args=(key, infos))


def _rename(conv: chat.Conversation, key: str) -> None:
    try:
        conv.saved.rename(state.get(key, ""))
    except ConversationError as exc:
        state["flash"] = [*state.get("flash", []), ("error", str(exc))]


def _ask(what: tuple) -> None:
    state["confirm"] = what


def _delete_conversation(conv: chat.Conversation) -> None:
    state.pop("confirm", None)
    try:
        conv.saved.delete()
    except ConversationError as exc:
        state["flash"] = [*state.get("flash", []), ("error", str(exc))]
        return
    conv.restart()
    state["flash"] = [*state.get("flash", []), ("success", "The conversation was deleted.")]


def manage(conv: chat.Conversation, sb) -> None:
    """Rename or delete the open conversation (deleting asks once)."""
    saved = conv.saved
    if saved.id is None:
        return
    key = f"title-{saved.id}"
    state.setdefault(key, saved.title)
    sb.text_input("Title", key=key, on_change=_rename, args=(conv, key))
    if state.get("confirm") == ("conversation", saved.id):
        sb.warning(f"Delete “{saved.title}” and all its messages? What she remembers about you stays.")
        cols = sb.columns(2)
        cols[0].button("Yes, delete it", key="confirm_delete", type="primary", on_click=_delete_conversation,
                       args=(conv,))
        cols[1].button("Keep it", key="keep", on_click=lambda: state.pop("confirm", None))
    else:
        sb.button("🗑 Delete this conversation", key="delete_conversation", on_click=_ask,
                  args=(("conversation", saved.id),))


def export(conv: chat.Conversation, sb) -> None:
    cols = sb.columns(2)
    saved = conv.saved
    stem = f"{saved.card.id}-conversation" + (f"-{saved.id}" if saved.id else "")
    cols[0].download_button("⬇ Markdown", saved.export_markdown(), file_name=f"{stem}.md", mime="text/markdown",
                            use_container_width=True)
    cols[1].download_button("⬇ JSON", json.dumps(saved.export_json(), ensure_ascii=False, indent=1),
                            file_name=f"{stem}.json", mime="application/json", use_container_width=True)


# ------------------------------------------------------------------ her memories of the reader
def _correct(conv: chat.Conversation, memory_id: int, key: str) -> None:
    saved = conv.saved
    try:
        saved.store.correct_memory(saved.reader, saved.card.id, memory_id, state.get(key, ""))
    except ConversationError as exc:
        state["flash"] = [*state.get("flash", []), ("error", str(exc))]


def _forget(conv: chat.Conversation, memory_id: int | None) -> None:
    state.pop("confirm", None)
    saved = conv.saved
    try:
        saved.store.forget(saved.reader, saved.card.id, memory_id)
    except ConversationError as exc:
        state["flash"] = [*state.get("flash", []), ("error", str(exc))]


def memories(conv: chat.Conversation, sb) -> None:
    """'What she remembers about you': each memory can be corrected (edit the text) or forgotten."""
    saved = conv.saved
    try:
        items = saved.store.memories(saved.reader, saved.card.id)
    except ConversationError as exc:
        sb.caption(errors.message(exc, "reading her memories"))
        return
    if not items:
        sb.caption(f"🧠 {saved.card.name} remembers nothing about you yet; tell her your name, "
                           "what you love, what worries you.")
        return
    box = sb.expander(f"🧠 What she remembers about you ({len(items)})")
    for m in items:
        key = f"memory-{m.id}"
        state.setdefault(key, m.text)
        cols = box.columns([5, 1])
        cols[0].text_input(f"{m.kind} · {when(m.created_at)}", key=key, on_change=_correct, args=(conv, m.id, key))
        cols[1].button("✕", key=f"forget-{m.id}", help="Forget this", on_click=_forget, args=(conv, m.id))
    if state.get("confirm") == ("memories", saved.reader):
        box.warning(f"Make {saved.card.name} forget everything you told her?")
        cols = box.columns(2)
        cols[0].button("Yes, forget all", key="confirm_forget_all", type="primary", on_click=_forget,
                       args=(conv, None))
        cols[1].button("Keep them", key="keep_memories", on_click=lambda: state.pop("confirm", None))
    else:
        box.button("Forget everything", key="forget_all", on_click=_ask, args=(("memories", saved.reader),))
