"""Read a user's book whatever its encoding, and find its chapters.

Handles UTF-8 (with or without BOM), UTF-16 (BOM or not), GB18030/GBK, Big5 and
whatever charset-normalizer recognises; refuses binaries with a clear message.
"""
from __future__ import annotations

import codecs
import html
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from charset_normalizer import from_bytes

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text", ".epub", ""}
# Chinese novels: 第一回 / 第12章 / 第一百二十回; English: Chapter 1 / CHAPTER XII.
_CHAPTER_RE = re.compile(
    r"^[ \t\u3000]*(?:"
    r"第[零〇一二两三四五六七八九十百千\d]+[回章节卷][^\n]{0,40}"
    r"|(?:chapter|CHAPTER|Chapter)\s+(?:\d+|[IVXLCDM]+)\b[^\n]{0,60}"
    r")[ \t\u3000]*$",
    re.MULTILINE,
)
_TAG_RE = re.compile(r"</?(?:p|br|div|span|i|b|em|strong|h\d|font|a)(?:\s[^>]*)?/?>", re.IGNORECASE)


class ReadError(ValueError):
    """A file that cannot be read as text; the message says why and what to do."""


@dataclass
class Chapter:
    title: str
    start: int  # character offset in Document.text


@dataclass
class Document:
    path: Path
    text: str
    encoding: str
    chapters: list[Chapter] = field(default_factory=list)

    def chapter_at(self, offset: int) -> str:
        """The title of the chapter that contains a character offset ('' before the first)."""
        title = ""
        for ch in self.chapters:
            if ch.start > offset:
                break
            title = ch.title
        return title


def _looks_binary(raw: bytes) -> bool:
    sample = raw[:8192]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in sample:
        # UTF-16 without BOM has a NUL in every other byte; binaries have them scattered.
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        return not (max(even, odd) > len(sample) // 4 and min(even, odd) < len(sample) // 50)
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control > len(sample) // 20


def decode(raw: bytes) -> tuple[str, str]:
    """Decode bytes of a text file; returns (text, encoding name)."""
    if raw.startswith(codecs.BOM_UTF8):
        return raw[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), "utf-16"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    sample = raw[:200_000]
    if b"\x00" in sample[:4096]:
        enc = "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
        return raw.decode(enc, errors="replace"), enc
    # Chinese books are usually GB18030 (a superset of GBK/GB2312) or Big5; try the strict
    # decoders first, since statistical detection confuses them on short samples.
    for enc in ("gb18030", "big5"):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    best = from_bytes(sample).best()
    if best is None:
        raise ReadError("could not recognise the text encoding; save the file as UTF-8 and try again.")
    enc = best.encoding
    return raw.decode(enc, errors="replace"), enc


def normalise(text: str) -> str:
    """Unify line endings, drop stray HTML markup and entities, trim trailing spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if "<" in text:
        text = _TAG_RE.sub("\n", text)
    if "&" in text:
        text = html.unescape(text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def find_chapters(text: str) -> list[Chapter]:
    """Chapter headings (第X回 / 第X章 / Chapter N) with their offsets."""
    found = []
    for m in _CHAPTER_RE.finditer(text):
        head = m.group(0)
        # Offset of the heading's first visible character, so it matches paragraph offsets.
        found.append(Chapter(re.sub(r"\s+", " ", head.strip()), m.start() + len(head) - len(head.lstrip())))
    return found


def _epub_text(path: Path) -> bytes:
    """The XHTML chapters of an EPUB (a zip), in archive order, as UTF-8 bytes."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith((".xhtml", ".html", ".htm"))]
            parts = [zf.read(n).decode("utf-8", errors="replace") for n in sorted(names)]
    except zipfile.BadZipFile as exc:
        raise ReadError(f"{path.name} is not a valid EPUB file ({exc}).") from exc
    body = "\n".join(re.sub(r"<[^>]+>", "\n", re.sub(r"(?s)<head.*?</head>", "", p)) for p in parts)
    return body.encode("utf-8")


def read_document(path: str | Path, max_bytes: int = 200 * 1024 * 1024) -> Document:
    """Read one book file into a Document, or raise ReadError saying what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ReadError(f"{p} does not exist or is not a file.")
    suffix = p.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ReadError(f"{p.name}: unsupported file type '{suffix}'; use .txt, .md or .epub.")
    size = p.stat().st_size
    if size == 0:
        raise ReadError(f"{p.name} is empty; nothing to add.")
    if size > max_bytes:
        raise ReadError(f"{p.name} is {size // 2**20} MB, over the {max_bytes // 2**20} MB limit; split it into parts.")
    raw = _epub_text(p) if suffix == ".epub" else p.read_bytes()
    if _looks_binary(raw):
        raise ReadError(f"{p.name} looks like a binary file, not text; skipped. Save the book as plain text (.txt).")
    text, encoding = decode(raw)
    text = normalise(text)
    if not text:
        raise ReadError(f"{p.name} holds no text after cleaning; nothing to add.")
    return Document(path=p, text=text, encoding=encoding, chapters=find_chapters(text))


def read_text(path: str | Path) -> tuple[str, str]:
    """Convenience: (clean text, encoding) of a file."""
    doc = read_document(path)
    return doc.text, doc.encoding
