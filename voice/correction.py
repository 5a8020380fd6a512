"""After recognition: the conversation's names put back where Whisper heard their homophones.

Whisper base, even primed, writes 贾母 as 假母 and 黛玉 as 待于: same sounds, everyday characters.
A stretch of the transcript that sounds exactly like one of the context's names (pypinyin, tones
ignored, the usual Mandarin confusions in/ing, en/eng, an/ang, z/zh, c/ch, s/sh allowed) becomes that
name. English names are matched by spelling: a capitalised "Longborn" becomes Longbourn.

Then the book's own words (:class:`BookWords`): a stretch that is no word and that the book never
writes, but that sounds exactly like a word the book uses, becomes that word (沉射 → 陈设, 搬搬 → 斑斑,
贬额 → 匾额).
"""
from __future__ import annotations

import difflib
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

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


def correct(text: str, terms: Iterable[str], lang: str, words: BookWords | None = None) -> str:
    """``text`` with homophones of ``terms`` (zh) or near-spellings of them (en) replaced by the terms,
    then (zh) non-words that sound like one of the book's ``words`` replaced by it."""
    terms = [t for t in terms if t]
    if not text:
        return text
    if lang != "zh":
        return _correct_en(text, terms) if terms else text
    text = _correct_zh(text, terms) if terms else text
    return words.fix(text, terms) if words is not None else text


@lru_cache(maxsize=4096)
def _tones(text: str) -> tuple[str, ...]:
    """Each character's tone, "1"-"4", or "5" for the neutral tone."""
    from pypinyin import Style, lazy_pinyin

    return tuple(p[-1] if p[-1].isdigit() else "5" for p in lazy_pinyin(text, style=Style.TONE3,
                                                                          neutral_tone_with_five=True))


def _tones_off(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Syllables whose tones differ (the neutral tone matches any: 跟这 is heard for 跟着)."""
    return sum(x != y and "5" not in (x, y) for x, y in zip(a, b, strict=False))


BOOK_WORD_MIN = 3  # times the book writes a word before a homophone becomes it
NEVER = 2  # a stretch the book writes this often is the book's own, not a mishearing


@dataclass
class BookWords:
    """A book's words by sound: the dictionary's words (jieba's) of two to four characters that the book
    writes at least BOOK_WORD_MIN times. Mined once per store version (~3 s for 红楼梦 on 2 cores).

    Whisper base writes what it hears as everyday characters that make no word (陈设 as 沉射, 朴素 as
    普宿, 斑斑 as 搬搬); names are voice.correction's first pass, this is the book's other words."""

    by_sound: dict[tuple[str, ...], list[tuple[str, int]]]  # toneless syllables -> [(word, count)]
    text: str  # the book's Chinese, to ask how often it writes a stretch
    names: tuple[str, ...] = ()  # kept whole when the transcript is cut into words
    lm: Any = None  # voice.booklm.BookLM: the third pass, characters re-read with the book's model
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def mine(cls, texts: Iterable[str], names: Iterable[str] = ()) -> BookWords:
        from knowledge_base.keywords import _base_jieba

        runs = _CJK_RUN.findall("\n".join(texts))
        grams: Counter[str] = Counter(r[i:i + n] for r in runs for n in (2, 3, 4) for i in range(len(r) - n + 1))
        known = _base_jieba().FREQ
        by_sound: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for w, c in grams.items():
            if c >= BOOK_WORD_MIN and known.get(w, 0) > 0:
                by_sound.setdefault(_raw_sounds(w), []).append((w, c))
        from voice.booklm import BookLM

        text = "\n".join(runs)
        return cls(by_sound, text, tuple(dict.fromkeys(n for n in names if n)), BookLM.mine(text))

    @cached_property
    def _segmenter(self) -> Any:
        """jieba with the book's names (built on first use: ~0.1 s to copy the dictionary)."""
        from knowledge_base.keywords import _jieba_with

        return _jieba_with(self.names)

    def fix(self, text: str, terms: Iterable[str] = ()) -> str:
        """``text`` with its non-words that sound like one of the book's words replaced by that word,
        then re-read with the book's model (:mod:`voice.booklm`); ``terms`` (the names just put back)
        are left alone."""
        terms = [t for t in terms if len(t) >= 2]
        out, last = [], 0
        for run in _CJK_RUN.finditer(text):
            fixed = self._fix_run(run.group(), terms)
            if self.lm is not None:
                fixed = self.lm.fix_run(fixed, _marks(fixed, terms))
            out += [text[last:run.start()], fixed]
            last = run.end()
        return "".join([*out, text[last:]])

    def _fix_run(self, run: str, terms: list[str]) -> str:
        """Stretches of single characters (jieba finds no word there), longest first: one the book never
        writes and that sounds like one of its words, in the same tones, becomes that word (the one whose
        tones agree most, then the one the book writes most)."""
        if len(run) < 2 or len(_raw_sounds(run)) != len(run):
            return run
        with self._lock:  # a jieba Tokenizer is not safe across threads
            pieces = self._segmenter.lcut(run, HMM=False)
        solid, i = [False] * len(run), 0
        for p in pieces:  # a word the dictionary or the book knows stays as heard
            if len(p) > 1 and (self._segmenter.FREQ.get(p, 0) > 0 or self.text.count(p) >= NEVER):
                solid[i:i + len(p)] = [True] * len(p)
            i += len(p)
        solid = [a or b for a, b in zip(solid, _marks(run, terms), strict=True)]
        chars = list(run)
        raw, tones = _raw_sounds(run), _tones(run)
        for n in (4, 3, 2):
            for i in range(len(run) - n + 1):
                piece = run[i:i + n]
                if any(solid[i:i + n]) or self.text.count(piece) >= NEVER:
                    continue
                # Whisper's wrong characters keep the tones it heard (沉射 chén shè for 陈设); a word in
                # other tones is another word (叫她 is not 脚踏): all tones agree in two syllables, all but one in more.
                heard = tones[i:i + n]
                cands = [wc for wc in self.by_sound.get(raw[i:i + n], ()) if _tones_off(_tones(wc[0]), heard) <= (n > 2)]
                if not cands:
                    continue
                best = max(cands, key=lambda wc: (-_tones_off(_tones(wc[0]), heard), wc[1]))
                chars[i:i + n] = list(best[0])
                solid[i:i + n] = [True] * n
        return "".join(chars)


def _marks(run: str, terms: list[str]) -> list[bool]:
    """Which characters of ``run`` belong to one of ``terms``."""
    marks = [False] * len(run)
    for t in terms:
        for m in re.finditer(re.escape(t), run):
            marks[m.start():m.end()] = [True] * len(t)
    return marks


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


COMMON_WORD = 1000  # jieba's count: 一年 7966, 相信 6789; 乡乡 7 (heard for 潇湘)


GRAMMAR = frozenset("了的着过地得")  # particles that end the word before them (听了, 我的, 看着)


def _common_word_at(piece: str, name: tuple[str, ...], heard: tuple[str, ...], after: bool = False) -> bool:
    """Whether a syllable a near name would change is part of a common word as heard: 整一年 is not
    赵姨娘, though folded it is one syllable from it (zheng/zhao; nian/niang fold together). ``after``:
    the stretch follows a character of the same run; then a particle first in it belongs to that word
    (听了待遇 is not 听林黛玉: le/lin, and 待遇 alone is 黛玉), whereas 流老了 is still 刘姥姥."""
    from knowledge_base.keywords import _base_jieba

    freq = _base_jieba().FREQ
    offs = [k for k, (a, b) in enumerate(zip(name, heard, strict=True)) if a != b]
    return (after and 0 in offs and piece[0] in GRAMMAR) or any(
        (freq.get(piece[k:k + 2]) or 0) >= COMMON_WORD for off in offs for k in (off - 1, off) if 0 <= k < len(piece) - 1)


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
            cands = [x for x in group if _alike(_sounds(x), folded[i:i + n])
                     and (_sounds(x) == folded[i:i + n] or not _common_word_at(piece, _raw_sounds(x), exact[i:i + n], i > 0))]
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
