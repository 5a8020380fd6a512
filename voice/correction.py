"""After recognition: the conversation's names put back where Whisper heard their homophones.

Whisper base, even primed, writes 贾母 as 假母 and 黛玉 as 待于: same sounds, everyday characters.
A stretch of the transcript that sounds exactly like one of the context's names (pypinyin, tones
ignored, the usual Mandarin confusions in/ing, en/eng, an/ang, z/zh, c/ch, s/sh allowed) becomes that
name. English names are matched by spelling: a capitalised "Longborn" becomes Longbourn.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import lru_cache

_CJK = re.compile(r"[\u4e00-\u9fff]")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_SPLIT_ZH = re.compile(r"[^\u4e00-\u9fff]+")
MAX_TERM = 6  # characters; a longer stretch of the context is a sentence, not a name
NEAR_FROM = 3  # names this long may be heard with one syllable off
EN_SIMILAR = 0.85  # difflib ratio: Longborn/Longbourn 0.94, Hunsord/Hunsford 0.93; Meriden/Meryton 0.57 is left


@lru_cache(maxsize=4096)
def _syllable(pinyin: str) -> str:
    """A toneless syllable with the confusions ears and TTS voices make folded together."""
    s = re.sub(r"^([zcs])h", r"\1", pinyin)
    return re.sub(r"(?<=[aei])ng$", "n", s)


@lru_cache(maxsize=4096)
def _raw_sounds(text: str) -> tuple[str, ...]:
    from pypinyin import lazy_pinyin

    return tuple(lazy_pinyin(text))


@lru_cache(maxsize=4096)
def _sounds(text: str) -> tuple[str, ...]:
    return tuple(_syllable(p) for p in _raw_sounds(text))


def context_terms(context: str, lang: str) -> list[str]:
    """The names in a priming context: its short pieces between punctuation (lists, her names)."""
    if lang == "zh":
        pieces = _SPLIT_ZH.split(context)
        return list(dict.fromkeys(p for p in pieces if 2 <= len(p) <= MAX_TERM))
    pieces = re.split(r"[,.;:!?]\s*", context)
    return list(dict.fromkeys(p.strip() for p in pieces if p.strip() and len(p.split()) <= 3
                              and p.strip()[0].isupper()))


def correct(text: str, terms: Iterable[str], lang: str) -> str:
    """``text`` with homophones of ``terms`` (zh) or near-spellings of them (en) replaced by the terms."""
    terms = [t for t in terms if t]
    if not terms or not text:
        return text
    return _correct_zh(text, terms) if lang == "zh" else _correct_en(text, terms)


def _correct_zh(text: str, terms: list[str]) -> str:
    names = list(dict.fromkeys(t for t in terms if len(t) >= 2 and all(_CJK.match(c) for c in t)))
    if not names:
        return text
    out = []
    last = 0
    for run in _CJK_RUN.finditer(text):
        out.append(text[last:run.start()])
        out.append(_fix_run(run.group(), names))
        last = run.end()
    out.append(text[last:])
    return "".join(out)


def _alike(name: tuple[str, ...], heard: tuple[str, ...]) -> bool:
    """Same syllables; a name of three or more may differ in one whose first letter is the same
    (潇湘馆 heard as 乡乡馆, 蘅芜苑 as 红无院, 怡红院 as 以红月)."""
    if name == heard:
        return True
    if len(name) < NEAR_FROM or len(name) != len(heard):
        return False
    off = [(a, b) for a, b in zip(name, heard, strict=True) if a != b]
    return len(off) == 1 and off[0][0][0] == off[0][1][0]


def _fix_run(run: str, names: list[str]) -> str:
    """Longest stretches first, left to right: a stretch that already is a name stays (平儿 is not 颦儿,
    though they sound alike once in/ing are folded); else the name that sounds like it, the one with the
    most exactly equal syllables, then the one listed first (most relevant), replaces it."""
    folded = _sounds(run)
    if len(folded) != len(run):  # pypinyin kept something unexpected whole: leave the run alone
        return run
    exact = _raw_sounds(run)
    known = set(names)
    chars, fixed = list(run), [False] * len(run)
    for n in sorted({len(x) for x in names}, reverse=True):
        group = [x for x in names if len(x) == n]
        for i in range(len(run) - n + 1):
            if any(fixed[i:i + n]):
                continue
            piece = run[i:i + n]
            if piece in known:
                fixed[i:i + n] = [True] * n
                continue
            cands = [x for x in group if _alike(_sounds(x), folded[i:i + n])]
            if not cands:
                continue
            best = max(cands, key=lambda x: (sum(a == b for a, b in zip(_raw_sounds(x), exact[i:i + n], strict=False)),
                                             -names.index(x)))
            chars[i:i + n] = list(best)
            fixed[i:i + n] = [True] * n
    return "".join(chars)


def _correct_en(text: str, terms: list[str]) -> str:
    """Capitalised words spelt almost like a name become it (Longborn -> Longbourn, Hunsord -> Hunsford).

    Only capitalised ones: Whisper capitalises what it took for a name, whereas a lower-case near miss
    is usually a real word ("gardeners" beside the Gardiners, "bonnet" beside Bennet).
    """
    names = {w.lower(): w for t in terms for w in t.split() if len(w) >= 5 and w.isalpha()}
    if not names:
        return text

    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        if word.lower() in names:
            return word
        best = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=EN_SIMILAR)
        return names[best[0]] if best else word

    return re.sub(r"\b[A-Z][a-z]{3,}\b", fix, text)
