"""A paragraph cut into narration and quotations (the quote marks of Chinese and English novels)."""
from __future__ import annotations

import re
from dataclasses import dataclass

_PAIRS = {"“": "”", "「": "」", "『": "』", '"': '"'}


@dataclass
class Segment:
    """A stretch of a paragraph: narration or one quotation (without its quote marks)."""

    quote: bool
    text: str
    start: int  # offset in the whole text
    end: int


@dataclass
class Paragraph:
    start: int
    segments: list[Segment]

    @property
    def quotes(self) -> list[int]:
        return [i for i, s in enumerate(self.segments) if s.quote]


def split_paragraphs(text: str) -> list[tuple[int, str]]:
    """Paragraphs with their offsets: blank-line separated, or one per line when the book has no blank lines."""
    blocks = [(m.start(), m.group(0)) for m in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", text, re.S)]
    lengths = sorted(len(b) for _, b in blocks) or [0]
    if lengths[len(lengths) // 2] > 3000 or len(blocks) < 3:  # one paragraph per line
        blocks = [(m.start(), m.group(0)) for m in re.finditer(r"[^\n]*\S[^\n]*", text)]
    return blocks


def segment(par_start: int, par: str) -> Paragraph:
    """Cut a paragraph into narration and quotations; an unclosed quotation runs to the paragraph's end."""
    segs: list[Segment] = []
    pos, i, n = 0, 0, len(par)
    while i < n:
        ch = par[i]
        if ch in _PAIRS:
            closer = _PAIRS[ch]
            j = par.find(closer, i + 1)
            # A second opener before the closer means the book lost a closing mark.
            nxt = par.find(ch, i + 1) if ch != closer else -1
            if j < 0 or (0 <= nxt < j):
                j = nxt if nxt >= 0 else n
                end_mark = j
            else:
                end_mark = j + 1
            if i > pos:
                segs.append(Segment(False, par[pos:i], par_start + pos, par_start + i))
            segs.append(Segment(True, par[i + 1:j], par_start + i + 1, par_start + j))
            pos = i = end_mark
            continue
        i += 1
    if pos < n:
        segs.append(Segment(False, par[pos:], par_start + pos, par_start + n))
    return Paragraph(par_start, segs)

