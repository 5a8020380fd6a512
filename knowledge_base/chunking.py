"""Split a Document into overlapping chunks sized for the embedders.

Chunks follow paragraphs, then sentences, so that a line of dialogue stays with the
narration that names its speaker (黛玉冷笑道：“……” / "...," said Elizabeth). Sizes are
in characters: multilingual-e5-small reads 512 tokens and USE is trained on sentences,
so ~300 Chinese characters (~300 tokens) or ~900 English characters (~200 tokens) fit
both without truncation.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from knowledge_base.reading import Document
from language import detect_lang
from sentences import split_sentences

SIZES = {"zh": (300, 60), "en": (900, 150)}  # language -> (target chars, overlap chars)


@dataclass
class Chunk:
    id: str
    text: str
    source: str  # file name, relative to the character's texts folder
    chapter: str
    start: int  # offset in the document text
    index: int  # position within its source


def _paragraphs(text: str, lang: str) -> Iterator[tuple[int, str]]:
    """(offset, paragraph) pairs; English hard-wrapped lines are joined into one paragraph."""
    sep = r"\n\s*\n" if lang == "en" else r"\n"
    pos = 0
    for part in re.split(f"({sep})", text):
        if part and not re.fullmatch(sep, part):
            para = re.sub(r"\s*\n\s*", " ", part).strip() if lang == "en" else part.strip()
            if para:
                yield pos + (len(part) - len(part.lstrip())), para
        pos += len(part)


def _sentences(para: str) -> list[str]:
    # The app's one splitter, with the spacing kept so that the pieces rebuild the paragraph.
    return [s for s in split_sentences(para, keep_space=True) if s.strip()]


def _pieces(para: str, target: int) -> list[str]:
    """A paragraph cut into pieces no longer than ``target``, at sentence ends when possible."""
    if len(para) <= target:
        return [para]
    out: list[str] = []
    cur = ""
    for sent in _sentences(para):
        while len(sent) > target:  # a run-on "sentence": cut hard
            if cur:
                out.append(cur)
                cur = ""
            out.append(sent[:target])
            sent = sent[target:]
        if len(cur) + len(sent) > target and cur:
            out.append(cur)
            cur = ""
        cur += sent
    if cur:
        out.append(cur)
    return out


def _tail(text: str, overlap: int) -> str:
    """The last whole sentences of ``text`` within ``overlap`` characters (for context carry-over)."""
    if overlap <= 0:
        return ""
    tail = ""
    for sent in reversed(_sentences(text)):
        if len(tail) + len(sent) > overlap:
            break
        tail = sent + tail
    if tail:
        return tail
    cut = text[-overlap:]
    space = cut.find(" ")  # don't start the carry-over mid-word
    return cut[space + 1 :] if 0 <= space < len(cut) // 2 else cut


def chunk_document(doc: Document, source: str, lang: str | None = None) -> list[Chunk]:
    """Cut a document into chunks with chapter metadata and stable, content-derived ids."""
    lang = lang or detect_lang(doc.text)
    target, overlap = SIZES.get(lang, SIZES["en"])
    joiner = "" if lang == "zh" else " "
    chunks: list[Chunk] = []
    buf: list[str] = []
    buf_start = 0
    carry = ""

    def flush() -> None:
        nonlocal buf, carry
        body = joiner.join(buf).strip()
        if body:
            text = (carry + joiner + body).strip() if carry else body
            digest = hashlib.sha1(f"{source}\0{len(chunks)}\0{text}".encode()).hexdigest()[:16]
            chunks.append(Chunk(digest, text, source, doc.chapter_at(buf_start), buf_start, len(chunks)))
            carry = _tail(body, overlap)
        buf = []

    chapter_starts = {ch.start for ch in doc.chapters}
    for offset, para in _paragraphs(doc.text, lang):
        if offset in chapter_starts:  # chunks never straddle chapters
            flush()
            carry = ""
        for piece in _pieces(para, target):
            if buf and len(joiner.join(buf)) + len(piece) > target:
                flush()
            if not buf:
                buf_start = offset
            buf.append(piece)
    flush()
    return chunks
