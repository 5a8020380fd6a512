"""Import a character card file as a new character folder, export a character as a card file.

Import: the card's fields become her Card (cards/mapping.py); its image, or a CHARX's main icon, becomes
``avatar.png``; its lorebook is kept as ``lorebook.json`` exactly as the card has it; the card's JSON itself
is kept as ``card_source.json``, so that an export gives back every field Zhiyin has no use for (unknown
fields, ``extensions``, assets, dates) untouched; a CHARX's other members are kept under ``card_assets/``.
Export: a V3 card (JSON, a CHARX, or a PNG of her portrait with ``ccv3`` and the backfilled V2 ``chara``).
Her books are not exported (their file names are, under ``extensions.zhiyin.books``).
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cards import codec, lorebook, spec
from cards.mapping import card_from_v3, v3_from_card
from cards.portrait import placeholder_png, portrait_png
from cards.spec import CardError
from characters import (
    LOREBOOK_FILE,
    SOURCE_FILE,
    TEXTS_DIR,
    Card,
    CharacterError,
    avatar_path,
    character_dir,
    exists,
    load_card,
    load_lorebook,
    safe_id,
    save_card,
    texts_dir,
)
from settings import paths

AVATAR_FILE = "avatar.png"
ASSETS_DIR = "card_assets"  # a CHARX's members besides card.json, so a CHARX export gives them back
ICON_PATH = "assets/icon/images/main.png"


# ------------------------------------------------------------------------------------- import
@dataclass
class ImportReport:
    card: Card
    folder: Path
    format: str
    version: int
    lore_entries: int = 0
    portrait: bool = False
    assets: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.card.id, "name": self.card.name, "folder": str(self.folder), "format": self.format,
                "card_version": self.version, "greetings": 1 + len(self.card.greetings),
                "example_exchanges": len(self.card.example_dialogue), "lorebook_entries": self.lore_entries,
                "portrait": self.portrait, "assets": self.assets, "notes": self.notes}

    def lines(self) -> list[str]:
        d = self.to_dict()
        return [f"Imported {d['name']} as '{d['id']}' from a V{self.version} "
                f"{self.format.upper()} card into {self.folder}: {d['greetings']} greeting(s), "
                f"{d['example_exchanges']} example exchange(s), {self.lore_entries} lorebook entr"
                f"{'y' if self.lore_entries == 1 else 'ies'}, {'a' if self.portrait else 'no'} portrait.",
                *self.notes,
                f"Add her books with `python gen_chroma.py build {self.card.id} PATH/TO/BOOK.txt` "
                "(or on the Knowledge page)."]


def _portrait_bytes(cf: codec.CardFile, data: dict, notes: list[str]) -> bytes | None:
    """The image that becomes her portrait: the PNG itself, or the card's main icon asset (CHARX/data URL)."""
    if cf.format == "png":
        return cf.image
    icons = [a for a in data.get("assets", []) if a.get("type") == "icon"]
    icon = next((a for a in icons if a.get("name") == "main"), icons[0] if icons else None)
    uri = str(icon.get("uri", "")) if icon else ""
    if uri.startswith(codec.EMBEDDED):
        blob = cf.assets.get(uri[len(codec.EMBEDDED):])
        if blob is None:
            notes.append(f"The card's icon {uri} is not in the file; she has no portrait.")
        return blob
    if uri.startswith("data:") and ";base64," in uri:
        try:
            return base64.b64decode(uri.split(";base64,", 1)[1], validate=True)
        except ValueError:
            notes.append("The card's icon (a data URL) is damaged; she has no portrait.")
    elif uri.startswith(("http://", "https://")):
        notes.append(f"The card's icon is on the web ({uri[:80]}); Zhiyin fetches nothing, so she has no portrait.")
    return None


def import_card(blob: bytes, filename: str, character_id: str | None = None) -> ImportReport:
    """Create a new character from a card file's bytes. Everything is checked before anything is written;
    only the new character's folder is written, and it is removed again if writing fails."""
    cf = codec.decode(blob, filename)
    return _import(cf, Path(filename).name, character_id)


def import_path(path: str | Path, character_id: str | None = None) -> ImportReport:
    """``import_card`` for a file on disk (read with the caps of ``codec.read_path``)."""
    return _import(codec.read_path(path), Path(path).name, character_id)


def _import(cf: codec.CardFile, name: str, character_id: str | None) -> ImportReport:
    v3, notes = spec.to_v3(cf.card, name)
    notes = [*cf.notes, *notes]
    data = v3["data"]
    try:
        cid = safe_id(character_id) if character_id else _id_from_name(data["name"])
    except CharacterError as exc:
        raise CardError(f"{exc} Import the card with --id ID (on the page: fill in the id).") from exc
    if exists(cid):
        raise CardError(f"A character with the id '{cid}' already exists ({_name_of(cid)}); import the card "
                        "with another id (--id ID, or the id field on the page). Nothing was changed.")
    card = card_from_v3(v3, cid)
    picture = _portrait_bytes(cf, data, notes)
    png = None
    if picture is not None:
        try:
            png = portrait_png(picture)
        except ValueError as exc:
            notes.append(f"The card's image was not used as her portrait: {exc}.")
    book = data.get("character_book")
    entries = len(lorebook.parse(book).entries) if book else 0
    folder = paths().knowledge / cid
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError as exc:
        raise CardError(f"The folder {folder} already exists; import with another id. Nothing was changed.") from exc
    try:
        (folder / TEXTS_DIR).mkdir()
        (folder / SOURCE_FILE).write_bytes(codec.dump_json(cf.card))
        if book:
            (folder / LOREBOOK_FILE).write_bytes(codec.dump_json(book))
        if png:
            (folder / AVATAR_FILE).write_bytes(png)
            card.avatar = AVATAR_FILE
        for rel, member in cf.assets.items():  # paths were checked by the codec (no '..', no absolute)
            target = folder / ASSETS_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(member)
        save_card(card)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # ours: made above with exist_ok=False
        raise
    return ImportReport(card, folder, cf.format, spec.version_of(cf.card, name), entries, png is not None,
                        len(cf.assets), notes)


def _id_from_name(name: str) -> str:
    """An id made from a card's name (which may hold any character): only letters, digits, '-', 64 at most."""
    cleaned = " ".join(re.sub(r"[^\w\s-]+", " ", str(name)).split())
    return safe_id(cleaned[:64].strip())


def _name_of(cid: str) -> str:
    try:
        return load_card(cid).name
    except CharacterError:
        return "a card that cannot be read"


# ------------------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    path: Path
    format: str
    bytes: int
    lore_entries: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def lines(self) -> list[str]:
        return [f"Wrote {self.path} (V3 {self.format.upper()} card, {self.bytes:,} bytes, "
                f"{self.lore_entries} lorebook entries).", *self.notes]


def _source(folder: Path, notes: list[str]) -> dict | None:
    path = folder / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        return spec.to_v3(json.loads(path.read_text(encoding="utf-8")), SOURCE_FILE)[0]
    except (json.JSONDecodeError, UnicodeDecodeError, CharacterError) as exc:
        notes.append(f"{path} could not be read ({exc}); the card was exported from card.yaml alone.")
        return None


def _stored_assets(folder: Path) -> dict[str, bytes]:
    root = folder / ASSETS_DIR
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def export_card(character_id: str, out: Path) -> ExportReport:
    """Write a character as a V3 card: ``out``'s suffix (.png, .json, .charx) chooses the format."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "json", "charx"):
        raise CardError(f"Cannot export to '{out.name}': give a file ending in .png, .json or .charx.")
    if not out.parent.is_dir():
        raise CardError(f"The folder {out.parent} does not exist; create it or export elsewhere.")
    blob, report = export_bytes(character_id, fmt)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    report.path = out
    return report


def export_bytes(character_id: str, fmt: str) -> tuple[bytes, ExportReport]:
    """The card file's bytes in ``fmt`` (png | json | charx) and what went into it."""
    card = load_card(character_id)
    folder = character_dir(card.id)
    notes: list[str] = []
    source = _source(folder, notes)
    book = load_lorebook(card.id)
    tdir = texts_dir(card.id)
    books = sorted(p.name for p in tdir.iterdir() if p.is_file()) if tdir.is_dir() else []
    v3 = v3_from_card(card, source, book, books, int(time.time()))
    portrait = avatar_path(card)
    stored = _stored_assets(folder)
    assets = v3["data"].get("assets")
    if fmt != "charx" and isinstance(assets, list):
        kept = [a for a in assets if not str(a.get("uri", "")).startswith(codec.EMBEDDED)]
        if len(kept) < len(assets):
            notes.append(f"{len(assets) - len(kept)} embedded asset(s) are kept only in a .charx export.")
        v3["data"]["assets"] = kept
    if fmt == "json":
        blob = codec.dump_json(v3)
    elif fmt == "png":
        image = portrait_png(portrait.read_bytes()) if portrait else placeholder_png(card.name)
        blob = codec.write_png(image, {"chara": spec.to_v2(v3), "ccv3": v3})
    else:
        blob = codec.write_charx(v3, _charx_assets(v3, portrait, stored))
    return blob, ExportReport(Path(f"{card.id}.{fmt}"), fmt, len(blob), len(lorebook.parse(book).entries), notes)


def _charx_assets(v3: dict, portrait: Path | None, stored: dict[str, bytes]) -> dict[str, bytes]:
    """The CHARX's members: what the import stored, with her current portrait as the main icon."""
    assets = v3["data"].setdefault("assets", [])
    members = dict(stored)
    icon = next((a for a in assets if a.get("type") == "icon" and a.get("name") == "main"), None)
    if portrait is None:
        if icon is None:
            assets.insert(0, {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"})
        return members
    png = portrait_png(portrait.read_bytes())
    uri = str(icon.get("uri", "")) if icon else ""
    old = members.get(uri[len(codec.EMBEDDED):]) if uri.startswith(codec.EMBEDDED) else None
    if old is not None and _same_picture(old, png):
        return members  # the portrait is still the card's own icon: give its original bytes back
    members[ICON_PATH] = png
    entry = {"type": "icon", "uri": codec.EMBEDDED + ICON_PATH, "name": "main", "ext": "png"}
    if icon is None:
        assets.insert(0, entry)
    else:
        icon.update(entry)
    return members


def _same_picture(original: bytes, png: bytes) -> bool:
    try:
        return portrait_png(original) == png
    except ValueError:
        return False
