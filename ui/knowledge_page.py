"""The Knowledge page: what she knows, add books, import or export a card, create a character."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from characters import Card
from knowledge_base.upgrade import upgrade_target
from ui import errors, knowledge
from ui.guard import may_edit


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


def show(card: Card, flash: Callable[[str, str], None]) -> None:
    st.header(f"What {card.name} knows")
    allowed = may_edit()
    status = knowledge.store_status(card.id)
    if "error" in status:
        st.warning(status["error"])
    else:
        cols = st.columns(3)
        cols[0].metric("Books", status["files"])
        cols[1].metric("Passages", f"{status['chunks']:,}")
        cols[2].metric("Characters", f"{status['characters']:,}")
        st.caption(f"{knowledge.searching_text(status)} · built {status['built']} · version {status['version']} · "
                   + knowledge.upgrade_text(status.get("upgrade", {})))
        target = upgrade_target()
        if not status["indexes"].get(target, {}).get("complete") and st.button(
                f"Upgrade the search index in the background ({target})", disabled=not allowed):
            from gen_chroma import start_background_upgrade

            pid = start_background_upgrade(card.id)
            st.info(f"Upgrade started (process {pid}); this page shows its progress when you come back.")

    st.subheader("Add books")
    files = st.file_uploader("Books (.txt, .md or .epub; any common encoding)", accept_multiple_files=True,
                             key="books")
    uploads = uploads_of(files)
    show_detected(uploads)
    if st.button(f"Add to {card.name} and rebuild", disabled=not (uploads and allowed), type="primary"):
        try:
            report, _ = knowledge.add_books(card.id, uploads, progress=progress_bar())
            st.success(f"Rebuilt: {report.files} books, {report.chunks:,} passages "
                       f"({len(report.added)} added, {len(report.changed)} changed) in {report.seconds:.1f} s.")
            if report.upgrade_pending:  # as the CLI does: the better index follows in the background
                from gen_chroma import start_background_upgrade

                pid = start_background_upgrade(card.id)
                st.info(f"Searchable now. A better index ({upgrade_target()}) is being built in the background "
                        f"(process {pid}); this page shows its progress.")
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
        submitted = st.form_submit_button("Create", disabled=not allowed)
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
        st.session_state["pending_character"] = new.id
        st.rerun()
