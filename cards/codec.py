"""Bytes <-> a card's JSON object: PNG ``tEXt`` chunks, plain JSON, CHARX zips. Small, pure, bounded.

PNG: the card is base64 of UTF-8 JSON in a ``tEXt`` chunk named ``ccv3`` (V3) or ``chara`` (V2, or a V3
card's backfill); ``ccv3`` wins when both are there, keywords match case-insensitively (as SillyTavern's
character-card-parser reads them). CHARX: a zip with ``card.json`` at its root and assets that the card
names as ``embeded://path`` (sic, the spec's spelling). Every read is capped: a file, a zip's total and
each member's compression ratio, so a 50 MB PNG or a zip bomb is a sentence, not a full disk.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cards.spec import CardError

MB = 1024 * 1024
MAX_CARD_BYTES = 20 * MB  # PNG and JSON cards: the ones in circulation are a few MB at most
MAX_CHARX_BYTES = 50 * MB  # a CHARX carries its assets (backgrounds, expressions)
MAX_UNZIPPED_BYTES = 100 * MB  # all of a CHARX's members together, once inflated
MAX_MEMBERS = 2000
MAX_RATIO = 200  # inflated / compressed for any member over 1 MB: text compresses ~10x, bombs ~1000x
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
CHARX_CARD = "card.json"
EMBEDDED = "embeded://"


@dataclass
class CardFile:
    """A card as found in a file: its JSON object and what came with it."""

    card: dict
    format: str  # png | json | charx
    chunk: str = ""  # the PNG chunk the card came from (ccv3 | chara)
    image: bytes | None = None  # the PNG itself
    assets: dict[str, bytes] = field(default_factory=dict)  # CHARX members besides card.json, by path
    notes: list[str] = field(default_factory=list)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def read_path(path: str | Path) -> CardFile:
    """Read and decode a card file, never reading more than the cap for its kind."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"There is no file {path}; give the path of a .png, .json or .charx card.")
    limit = MAX_CHARX_BYTES if path.suffix.lower() == ".charx" else MAX_CARD_BYTES
    with path.open("rb") as fh:
        head = fh.read(4)
        if head == b"PK\x03\x04":
            limit = MAX_CHARX_BYTES
        data = head + fh.read(limit + 1 - len(head))
    return decode(data, path.name)


def decode(data: bytes, name: str) -> CardFile:
    """A card from a file's bytes; the format is told by its first bytes, not its name."""
    name = Path(name).name or "the file"
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return read_charx(data, name)
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"{name} is larger than {_mb(MAX_CARD_BYTES)}, too large for a character card; "
                        "nothing was imported.")
    if data.startswith(PNG_SIGNATURE):
        return read_png(data, name)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return CardFile(_json(data, name), "json")
    raise CardError(f"{name} is not a character card: expected a PNG card, a JSON card or a .charx file.")


def _json(data: bytes, name: str, where: str = "") -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"The card data in {name}{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "the file is damaged, export the card again.") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"The card data in {name}{where} is not valid JSON ({exc.msg} at character {exc.pos}; "
                        "cut short?); the file is damaged, export the card again.") from exc


# ----------------------------------------------------------------------------------------- PNG
def png_chunks(data: bytes, name: str = "the PNG") -> list[tuple[bytes, bytes]]:
    """The PNG's chunks as (type, data), up to IEND; CardError if the file is cut short or not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise CardError(f"{name} is not a PNG image.")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise CardError(f"{name} is cut short (a PNG chunk header is incomplete); the file is damaged.")
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise CardError(f"{name} is cut short (its {ctype.decode('latin-1')!r} chunk runs past the end "
                            "of the file); the file is damaged.")
        chunks.append((ctype, data[pos + 8:pos + 8 + length]))
        pos = end
        if ctype == b"IEND":
            break
    return chunks


def text_chunks(data: bytes, name: str = "the PNG") -> list[tuple[str, str]]:
    """Every ``tEXt`` chunk as (keyword, text), in file order."""
    out = []
    for ctype, body in png_chunks(data, name):
        if ctype == b"tEXt" and b"\0" in body:
            key, _, text = body.partition(b"\0")
            out.append((key.decode("latin-1"), text.decode("latin-1")))
    return out


def read_png(data: bytes, name: str) -> CardFile:
    chunks = {}
    for key, text in text_chunks(data, name):
        chunks.setdefault(key.lower(), text)  # the first of a keyword, case-insensitively
    keyword = next((k for k in CARD_KEYWORDS if k in chunks), None)
    if keyword is None:
        raise CardError(f"{name} is a PNG image without a character card in it (no 'chara' or 'ccv3' text "
                        "chunk); export the character as a PNG card, or use it as a portrait instead.")
    raw = "".join(chunks[keyword].split())
    raw += "=" * (-len(raw) % 4) if len(raw) % 4 != 1 else ""  # Node tolerates missing padding; so do we
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CardError(f"The '{keyword}' card data in {name} is not valid base64 ({exc}; cut short?); "
                        "the file is damaged, export the card again.") from exc
    card = _json(blob, name, f" ('{keyword}' chunk)")
    notes = []
    if keyword == "chara" and "ccv3" not in chunks and any(k.startswith("chara-ext-asset_") for k in chunks):
        notes.append("The PNG's embedded asset chunks (chara-ext-asset_) were not kept; only a .charx keeps assets.")
    return CardFile(card, "png", chunk=keyword, image=data, notes=notes)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + ctype + body + zlib.crc32(ctype + body).to_bytes(4, "big")


def text_chunk(keyword: str, obj: dict) -> bytes:
    """A ``tEXt`` chunk holding ``obj`` as base64 of its UTF-8 JSON."""
    text = base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8"))
    return _chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text)


def write_png(image: bytes, cards: dict[str, dict]) -> bytes:
    """``image`` (a PNG) with its old card chunks removed and ``cards`` (keyword -> object) added before IEND."""
    kept = []
    for ctype, body in png_chunks(image, "the portrait"):
        key = body.partition(b"\0")[0].decode("latin-1").lower() if ctype == b"tEXt" else ""
        if ctype == b"IEND" or key in CARD_KEYWORDS:
            continue
        kept.append(_chunk(ctype, body))
    return PNG_SIGNATURE + b"".join(kept) + b"".join(text_chunk(k, v) for k, v in cards.items()) \
        + _chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------- CHARX
def _unsafe(path: str) -> bool:
    """A member that could land outside the folder it is extracted to (or is not a plain relative path)."""
    if not path or "\\" in path or "\0" in path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    return any(part in ("..", ".") for part in PurePosixPath(path).parts)


def read_charx(data: bytes, name: str) -> CardFile:
    """``card.json`` and every other member (by path) of a CHARX, after the path and size checks."""
    if len(data) > MAX_CHARX_BYTES:
        raise CardError(f"{name} is larger than {_mb(MAX_CHARX_BYTES)}, too large for a .charx card; "
                        "nothing was imported.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise CardError(f"{name} is not a readable .charx (zip) file ({exc}); export the card again.") from exc
    if len(infos) > MAX_MEMBERS:
        raise CardError(f"{name} holds {len(infos):,} files, more than the {MAX_MEMBERS:,} a card may; "
                        "nothing was imported.")
    total = 0
    for info in infos:
        if _unsafe(info.filename):
            raise CardError(f"{name} contains the unsafe path '{info.filename}' (it could write outside the "
                            "character's folder); nothing was imported.")
        if info.flag_bits & 0x1:
            raise CardError(f"{name} is encrypted ('{info.filename}'); export it again without a password.")
        total += info.file_size
        if info.file_size > MB and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CardError(f"{name} looks like a zip bomb: '{info.filename}' inflates {info.compress_size:,} "
                            f"bytes to {_mb(info.file_size)}; nothing was imported.")
    if total > MAX_UNZIPPED_BYTES:
        raise CardError(f"{name} would inflate to {_mb(total)}, more than the {_mb(MAX_UNZIPPED_BYTES)} a card "
                        "may (a zip bomb?); nothing was imported.")
    members: dict[str, bytes] = {}
    inflated = 0
    for info in infos:
        if info.is_dir():
            continue
        try:
            with zf.open(info) as fh:  # never trust the declared size: read at most one byte past it
                blob = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
            raise CardError(f"{name} is damaged ('{info.filename}': {exc}); export the card again.") from exc
        inflated += len(blob)
        if len(blob) > info.file_size or inflated > MAX_UNZIPPED_BYTES:
            raise CardError(f"{name} inflates past what its directory declares (a zip bomb?); "
                            "nothing was imported.")
        members[info.filename] = blob
    if CHARX_CARD not in members:
        raise CardError(f"{name} is a zip file without a card.json at its root, so not a .charx card; "
                        "export the character as a .charx again.")
    card = _json(members.pop(CHARX_CARD), name, " (card.json)")
    return CardFile(card, "charx", assets=members)


def write_charx(card: dict, assets: dict[str, bytes]) -> bytes:
    """A CHARX: ``card.json`` plus the assets (paths checked like an import's)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CHARX_CARD, json.dumps(card, ensure_ascii=False, indent=1))
        for path, blob in sorted(assets.items()):
            if _unsafe(path) or path == CHARX_CARD:
                raise CardError(f"The asset path '{path}' cannot go into a .charx.")
            zf.writestr(path, blob)
    return buf.getvalue()


def dump_json(card: dict) -> bytes:
    return (json.dumps(card, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
