"""The Knowledge page's logic: look at uploaded books, add them to a store, create a character, import
a community character card (and the page section that does it, ``card_import_section``)."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from characters import (
    Card,
    CharacterError,
    card_problems,
    exists,
    load_card,
    load_lorebook,
    safe_id,
    save_card,
    writable_dir,
)
from knowledge_base.builder import BuildReport, build, safe_filename, upgrade_status
from knowledge_base.upgrade import eta_text
from knowledge_base.reading import ReadError, read_document
from knowledge_base.store import KnowledgeStore, StoreError

Progress = Callable[[str, int, int], None]
PORTRAIT_TYPES = {".png", ".jpg", ".jpeg", ".webp"}
STAGE_LABELS = {"read": "Reading", "embed": "Embedding", "store": "Storing", "keywords": "Indexing words"}


@dataclass
class UploadInfo:
    """What was detected in one uploaded file (or why it cannot be used)."""

    name: str
    size: int
    encoding: str = ""
    characters: int = 0
    chapters: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def summary(self) -> str:
        if self.error:
            return self.error
        first = "、".join(self.chapters[:3]) if self.chapters else "none found"
        return (f"{self.name}: {human_size(self.size)}, encoding {self.encoding}, {self.characters:,} characters, "
                f"{len(self.chapters)} chapters (first: {first})")


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MB"


def save_upload(name: str, data: bytes, folder: Path) -> Path:
    """Write uploaded bytes under ``folder`` with a safe file name (the name a book keeps in texts/)."""
    path = folder / safe_filename(name)
    path.write_bytes(data)
    return path


def inspect_path(path: Path, name: str | None = None) -> UploadInfo:
    """Read a saved upload with read_document and report encoding, size and chapters."""
    info = UploadInfo(name=name or path.name, size=path.stat().st_size if path.exists() else 0)
    try:
        doc = read_document(path)
    except ReadError as exc:
        info.error = str(exc)
        return info
    info.encoding, info.characters = doc.encoding, len(doc.text)
    info.chapters = [c.title for c in doc.chapters]
    return info


def inspect_upload(name: str, data: bytes) -> UploadInfo:
    """What read_document detects in uploaded bytes (saved to a temporary file first)."""
    with tempfile.TemporaryDirectory(prefix="zhiyin-upload-") as tmp:
        return inspect_path(save_upload(name, data, Path(tmp)), name)


def add_books(character_id: str, uploads: list[tuple[str, bytes]], progress: Progress | None = None,
              name: str | None = None, lang: str | None = None) -> tuple[BuildReport, list[UploadInfo]]:
    """Add the readable uploads to a character's texts and rebuild her store (incrementally).

    Unreadable files are reported and left out; if none is readable, nothing is changed.
    """
    with tempfile.TemporaryDirectory(prefix="zhiyin-upload-") as tmp:
        paths, infos = [], []
        for fname, data in uploads:
            path = save_upload(fname, data, Path(tempfile.mkdtemp(dir=tmp)))  # own folder: same names don't collide
            info = inspect_path(path, fname)
            infos.append(info)
            if info.ok:
                paths.append(path)
        if uploads and not paths:
            raise ReadError("None of the uploaded files could be read as text: " +
                            " ".join(i.error for i in infos) + " Upload a .txt, .md or .epub book.")
        report = build(safe_id(character_id), inputs=paths, name=name, lang=lang, progress=progress)
    return report, infos


def check_portrait(name: str, data: bytes) -> str:
    """The portrait's file suffix, or CharacterError if it is not an image we can show."""
    import io

    from PIL import Image, UnidentifiedImageError

    suffix = Path(name).suffix.lower()
    if suffix not in PORTRAIT_TYPES:
        raise CharacterError(f"The portrait {name} is not a PNG, JPEG or WebP image; upload one of those.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CharacterError(f"The portrait {name} could not be read as an image ({exc}); upload another file.") from exc
    return ".jpg" if suffix == ".jpeg" else suffix


def create_character(name: str, uploads: list[tuple[str, bytes]], character_id: str = "",
                     portrait: tuple[str, bytes] | None = None, description: str = "", lang: str | None = None,
                     progress: Progress | None = None) -> tuple[Card, BuildReport, list[UploadInfo]]:
    """Create a character from a name, books and an optional portrait, then build her store.

    Everything is checked before anything is written, so a bad input leaves no half-made character.
    """
    name = " ".join(name.split())
    if not name:
        raise CharacterError("Give the character a name.")
    cid = safe_id(character_id.strip() or name)
    if exists(cid):
        raise CharacterError(f"A character with the id '{cid}' already exists; choose another id, or add books "
                             f"to her in the section above.")
    if not uploads:
        raise ReadError("Upload at least one book (.txt, .md or .epub) for the new character.")
    suffix = check_portrait(*portrait) if portrait else ""
    infos = [inspect_upload(f, d) for f, d in uploads]
    if not any(i.ok for i in infos):
        raise ReadError("None of the uploaded files could be read as text: " +
                        " ".join(i.error for i in infos) + " Upload a .txt, .md or .epub book.")
    report, infos = add_books(cid, uploads, progress=progress, name=name, lang=lang)
    card = load_card(cid)
    card.name = name
    if description.strip():
        card.description = " ".join(description.split())
    if portrait:
        file = f"portrait{suffix}"
        (writable_dir(cid) / file).write_bytes(portrait[1])
        card.avatar = file
    save_card(card)
    return card, report, infos


def store_status(character_id: str) -> dict:
    """Store stats plus background-upgrade progress, or {'error': sentence} when there is no store."""
    cid = safe_id(character_id)
    if not KnowledgeStore.exists(cid):
        return {"error": f"'{cid}' has no knowledge store yet; upload a book below and press Rebuild."}
    try:
        stats = KnowledgeStore.open(cid).stats()
    except StoreError as exc:
        return {"error": str(exc)}
    stats["upgrade"] = upgrade_status(cid)
    return stats


EMBEDDER_NAMES = {"use": "USE (the fast first index)", "e5": "e5", "embeddinggemma": "EmbeddingGemma"}


def searching_text(status: dict) -> str:
    """"Searching with EmbeddingGemma and a second look" (a metric tile cut the model's name short)."""
    name = EMBEDDER_NAMES.get(status["embedder"], status["embedder"])
    return f"Searching with {name}" + (" and a second look" if "windows" in status.get("searching", []) else "")


def upgrade_text(status: dict) -> str:
    """One line on the background index upgrade."""
    if not status:
        return "No background upgrade has run."
    done, total = status.get("done", 0), status.get("total", 0) or 0
    stage = status.get("stage", "")
    tail = eta_text(status.get("eta_s")) if done < total else ""
    return f"Upgrade to '{status.get('target', '?')}': {stage} {done}/{total}{tail}."


def progress_text(stage: str, done: int, total: int) -> tuple[float, str]:
    """(fraction, label) for st.progress from a builder progress callback."""
    frac = min(max(done / total, 0.0), 1.0) if total else 0.0
    return frac, f"{STAGE_LABELS.get(stage, stage.capitalize())}: {done}/{total}"


# ---------------------------------------------------------------------------- character cards
CARD_TYPES = ["png", "json", "charx"]


def import_card_upload(name: str, data: bytes, character_id: str = ""):  # -> cards.transfer.ImportReport
    """Import an uploaded character card as a new character (one sentence on any bad input, nothing written)."""
    from cards.transfer import import_card

    return import_card(data, name, character_id.strip() or None)


def lorebook_summary(card: Card) -> str:
    """One line on the character's lorebook and greetings (what a card brought with it)."""
    try:
        book = load_lorebook(card.id)
    except CharacterError as exc:
        return str(exc)
    from cards.lorebook import parse

    entries = parse(book).entries
    always = sum(1 for e in entries if e.stable)
    lore = (f"Lorebook: {len(entries)} entries ({always} always in the prompt, the others when the conversation "
            "names their keys)." if entries else "No lorebook.")
    return lore + (f" {1 + len(card.greetings)} greetings." if card.greetings else "")


def card_import_section(card: Card, flash: Callable[[str, str], None]) -> None:
    """The Knowledge page's "Character cards" section: import a card, download this character as one,
    and a sentence for every character whose card.yaml cannot be read."""
    import streamlit as st

    from ui import errors
    from ui.resources import editing_allowed

    st.subheader("Character cards")
    for problem in card_problems():
        st.warning(problem)
    st.caption(f"{card.name}: {lorebook_summary(card)}")
    allowed, why = editing_allowed(st.session_state.get("password", ""))
    with st.form("import_card"):
        upload = st.file_uploader("Import a character card (SillyTavern, RisuAI, Agnai…: PNG, JSON or CHARX; "
                                  "V1, V2 or V3)", type=CARD_TYPES, key="card_file")
        cid = st.text_input("Id (optional; from the card's name otherwise)", key="card_id")
        submitted = st.form_submit_button("Import", disabled=not allowed)
    if not allowed:
        st.info(why)
    if submitted and upload is not None:
        try:
            report = import_card_upload(upload.name, upload.getvalue(), cid)
        except Exception as exc:
            st.error(errors.message(exc, "importing the card"))
            return
        for note in report.notes:
            flash("warning", note)
        flash("success", report.lines()[0] + " She is selected now; add her books above.")
        st.session_state["pending_character"] = report.card.id
        st.rerun()
    fmt = st.radio("Download as a card", CARD_TYPES, horizontal=True, key="card_format")
    if st.button(f"Prepare {card.name} as a .{fmt} card"):
        from cards.transfer import export_bytes

        try:
            blob, _ = export_bytes(card.id, fmt)
        except Exception as exc:
            st.error(errors.message(exc, "exporting the card"))
            return
        st.download_button(f"⬇ {card.id}.{fmt}", blob, file_name=f"{card.id}.{fmt}")
