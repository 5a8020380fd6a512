"""One language detector for the whole app: "zh" or "en" from the text's own letters.

Speech (each sentence), chunking (a book), dialogue extraction (a book) and the prompt all ask
the same question; they used three rules that disagreed on mixed text. A character's card says
its language outright (``Card.lang``); this is for text that comes without one.
"""
from __future__ import annotations

import re

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs: unified, extension A, compatibility
_CJK_RE = re.compile(f"[{CJK}]")
_LATIN_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f]+")


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def detect_lang(text: str, default: str = "en", sample: int = 200_000) -> str:
    """'zh' when the text holds at least as many CJK characters as Latin words, else 'en'.

    A Chinese character carries about what an English word does, so the counts compare fairly on
    mixed text ("我最喜欢的书是Pride and Prejudice" is Chinese). Only the first ``sample``
    characters are read (a whole novel decides no better). ``default`` when there is neither.
    """
    head = text[:sample]
    zh, en = len(_CJK_RE.findall(head)), len(_LATIN_WORD_RE.findall(head))
    if zh == en == 0:
        return default
    return "zh" if zh >= en else "en"
