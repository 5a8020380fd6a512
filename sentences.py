"""Sentences of Chinese and English text: the one splitter, for speech (voice), excerpts (ragchat)
and chunking (knowledge_base)."""
from __future__ import annotations

import re

# A sentence ends at CJK terminators, or at . ! ? followed by space/end (so 3.14 stays whole).
SENT_END = re.compile(r"([。！？!?；;…]+[”’\"』」)）]*|\.(?=\s|$)[”’\"』」)）]*|\n+)")
ABBREV = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Mt.", "vs.", "e.g.", "i.e.", "etc.")


def split_sentences(text: str, keep_space: bool = False) -> list[str]:
    """Split text into sentences, keeping each terminator with its sentence.

    Sentences come stripped; with ``keep_space`` the spaces after a sentence stay with it, so the
    pieces join back into ``text`` exactly (chunking needs offsets and the original spacing).
    """
    out: list[str] = []
    buf = ""
    for piece in SENT_END.split(text):
        if not piece:
            continue
        if keep_space and out and not buf and piece.isspace():
            out[-1] += piece  # the spaces after a terminator belong to its sentence
            continue
        if keep_space and out and not buf and piece[:1].isspace():
            body = piece.lstrip()
            out[-1] += piece[: len(piece) - len(body)]
            piece = body
        buf += piece
        if SENT_END.fullmatch(piece) and not buf.rstrip().endswith(ABBREV):
            if keep_space:
                out.append(buf)
            elif buf.strip():
                out.append(buf.strip())
            buf = ""
    if keep_space and buf:
        out.append(buf)
    elif buf.strip():
        out.append(buf.strip())
    return out
