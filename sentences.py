"""Sentences of Chinese and English text: one splitter for speech (voice) and for excerpts (ragchat)."""
from __future__ import annotations

import re

# A sentence ends at CJK terminators, or at . ! ? followed by space/end (so 3.14 stays whole).
SENT_END = re.compile(r"([。！？!?；;…]+[”’\"』」)）]*|\.(?=\s|$)[”’\"』」)）]*|\n+)")
ABBREV = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Mt.", "vs.", "e.g.", "i.e.", "etc.")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, keeping each terminator with its sentence."""
    out: list[str] = []
    buf = ""
    for piece in SENT_END.split(text):
        if not piece:
            continue
        buf += piece
        if SENT_END.fullmatch(piece) and not buf.rstrip().endswith(ABBREV):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
