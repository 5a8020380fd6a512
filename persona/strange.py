"""Questions from outside her world, and the words in them her book never writes.

The guard's modern-word lists (prompts/<lang>.yaml) hold what we thought of; readers ask about 高铁,
抖音, 服务器, Netflix and electric cars. Her book is the wider list: a word it never writes is, for
her, a word of another world. A question is *off-world* when it says a listed modern word, a Latin
word in a Chinese book's world, a capitalised name her book never writes (Netflix, ChatGPT), or when
it is close in meaning (USE) to a typical off-world request (``guard.offworld_questions``: be an
assistant, write code, translate, your system prompt). On such a turn she is reminded that these are
things she does not know (``offworld_reminder``), and her answer may not say the question's strange
words nor any figure (10小时, 17 × 23 = 391): she does not take them up, she answers as herself.

The book's vocabulary is mined once per store version (knowledge_base/mined.py), ~1 s for 红楼梦.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from knowledge_base.mined import per_version

THRESHOLD = 0.6  # cosine (USE) to the nearest off-world request; bench/persona_bench.py's sets chose it
# Dictionary words (jieba's) her book never writes, in one Chinese question, or lowercase words in an English
# one: one or two are often just today's wording (第一次, 感想, 哪里; snowing, outside); 高铁, 北京, 上海 and
# 多久, or debug, spreadsheet and formula, together are another world.
STRANGE_WORDS = 3
MIN_BOOK = 100_000  # characters: below this, what the book does not write tells nothing (a short story)
FIGURES_PER_10K = 3  # a book writing fewer figures than this per 10,000 characters: her answer writes none
PROPER_TAGS = frozenset({"nr", "ns", "nt", "nz"})  # jieba's: people, places, organisations, other names
NOUN_TAGS = frozenset({"n", "nz", "ns", "nt", "eng"})  # jieba's: nouns, other nouns, places, organisations
_FIGURE = re.compile(r"\d+")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9+#.'-]*[A-Za-z0-9+#]|[A-Za-z]")
_EN_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")
_EN_SUFFIXES = ("", "s", "es", "ed", "d", "ing", "ly", "'s")
_ACRONYM = re.compile(r"(?<![A-Za-z])[A-Z]{2,}s?(?![A-Za-z])")


@dataclass(frozen=True)
class Vocabulary:
    """What a book writes: its Chinese as one text (a word is known when the text holds it) or its English
    words, lowercased, with hyphenated words also joined (Austen's to-day is today)."""

    lang: str
    text: str = ""
    words: frozenset[str] = frozenset()
    figures: bool = True  # the book writes numbers in figures (10, 1811), not only its chapters' numbers
    size: int = 0  # characters read: a short book's silence about a word says little

    @classmethod
    def of(cls, texts: Iterable[str], lang: str) -> Vocabulary:
        joined = "\n".join(texts)
        # 红楼梦 writes no figure at all, Pride and Prejudice 66 in 684k characters (its chapter numbers).
        figures = len(joined) < MIN_BOOK or len(_FIGURE.findall(joined)) * 10_000 >= FIGURES_PER_10K * len(joined)
        if lang == "zh":
            return cls(lang, text="\n".join(_CJK_RUN.findall(joined)), figures=figures, size=len(joined))
        words = {w.lower() for w in _EN_WORD.findall(joined)}
        return cls(lang, words=frozenset(words | {w.replace("-", "") for w in words if "-" in w}), figures=figures,
                   size=len(joined))

    def knows(self, word: str) -> bool:
        if self.lang == "zh":
            return word in self.text
        w = word.lower().replace("-", "")
        stems = {w[: len(w) - len(s)] for s in _EN_SUFFIXES if w.endswith(s) and len(w) > len(s) + 1}
        return any(stem + s in self.words for stem in stems for s in _EN_SUFFIXES)  # walking: walked


def book_vocabulary(card: Any, store: Any = None) -> Vocabulary | None:
    """The card's book's vocabulary, once per store version (None: no book yet)."""
    return per_version("vocabulary", card, store, lambda texts: Vocabulary.of(texts, card.lang), None)


def strange_words(question: str, vocab: Vocabulary | None, names: Sequence[str] = ()) -> list[str]:
    """The question's words her book never writes: every Latin word in a Chinese question; Chinese words of
    two or more characters (jieba's cut) and English words (any form: cars, car) that the book lacks, when
    the book is long enough to judge by (MIN_BOOK)."""
    if vocab is None:
        return []
    out: list[str] = []
    if vocab.lang == "zh":
        out += _LATIN.findall(question)
        if vocab.size < MIN_BOOK:
            return list(dict.fromkeys(out))
        seg = _segmenter(tuple(names))
        for w in seg.cut(_LATIN.sub(" ", question)):
            if len(w) < 2 or not _CJK_RUN.fullmatch(w) or vocab.knows(w):
                continue
            # A word jieba guessed (not in its dictionary) that holds one of the book's words is the book's
            # word with a neighbour glued on (紫鹃送, 进贾府); 刷抖音 holds none.
            if w not in seg.FREQ and any(vocab.knows(w[i:i + 2]) for i in range(len(w) - 1)):
                continue
            out.append(w)
    elif vocab.size >= MIN_BOOK:
        own = {p.lower() for n in names for p in n.split()}
        out = [w for w in _EN_WORD.findall(question) if len(w) > 1 and w.lower() not in own and not vocab.knows(w)]
    return list(dict.fromkeys(out))


@lru_cache(maxsize=8)
def _segmenter(names: tuple[str, ...]) -> Any:
    """jieba with her names (a copy of its dictionary, ~0.1 s: once per character)."""
    from knowledge_base.keywords import _jieba_with

    return _jieba_with(names)


@lru_cache(maxsize=4096)
def _noun(word: str) -> bool:
    """jieba's part of speech for ``word`` is a common noun, a place or an organisation (列车, 方程, 城区),
    not a verb or adverb: her answer may say 设置 or 高速 in her own sense, not name a thing she cannot know."""
    import jieba.posseg

    tags = jieba.posseg.lcut(word)
    return len(tags) == 1 and tags[0].flag in NOUN_TAGS


def _named_thing(word: str, names: Sequence[str]) -> bool:
    """A noun of jieba's dictionary (王者, 股票), not one of today's other words (第一次, 感想, 哪里)."""
    return _segmenter(tuple(names)).FREQ.get(word, 0) > 0 and _noun(word)


def unknown_words(vocab: Vocabulary, names: Sequence[str] = ()) -> Callable[[str], list[str]]:
    """A test for guard.Rules.unknown: the nouns of jieba's dictionary in a Chinese text that her book never
    writes; in English the names and capitals' abbreviations it never writes (Elon Musk for a barred Tesla, IG
    for Instagram, AI, TV): an English book's vocabulary is too small to judge an answer's other words."""
    if vocab.lang != "zh":
        def names_and_capitals(text: str) -> list[str]:
            capitals = [w for w in strange_words(text, vocab, names) if w[0].isupper()]
            acronyms = [w for w in _ACRONYM.findall(text) if not vocab.knows(w)]
            return list(dict.fromkeys([*acronyms, *_capitalised_inside(text, capitals)]))

        return names_and_capitals
    return lambda text: [w for w in strange_words(text, vocab, names) if _named_thing(w, names)]


def _capitalised_inside(question: str, strange: Sequence[str]) -> list[str]:
    """Strange English words written with a capital where no sentence starts (Netflix, ChatGPT, SQL)."""
    found = []
    for w in strange:
        for m in re.finditer(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", question):
            before = question[:m.start()].rstrip()
            if w[0].isupper() and before and not before.endswith((".", "!", "?", ":", '"', "“")):
                found.append(w)
                break
    return found


def _proper_nouns(strange: Sequence[str], vocab: Vocabulary | None) -> list[str]:
    """Names of people, places and things (jieba's nr, ns, nt, nz) her book never writes, no piece of
    them either: 周杰伦, 北京, 英文; not 桃花开 (jieba's place name, but 桃花 is hers) nor two-character
    "people" such as 那串 (jieba's guesses)."""
    if vocab is None or vocab.size < MIN_BOOK:
        return []
    import jieba.posseg

    found = []
    for w in strange:
        tags = jieba.posseg.lcut(w)
        if len(tags) != 1 or tags[0].flag not in PROPER_TAGS or (tags[0].flag == "nr" and len(w) < 3):
            continue
        if not any(vocab.knows(w[i:i + 2]) for i in range(len(w) - 1)):
            found.append(w)
    return found


@dataclass(frozen=True)
class OffWorld:
    """Why a question comes from outside her world ('' when it does not) and the words her answer avoids."""

    why: str = ""
    words: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.why)


def judge(question: str, lang: str, modern: Sequence[str], vocab: Vocabulary | None,
          bank: tuple[str, ...] = (), names: Sequence[str] = (), threshold: float = THRESHOLD,
          things_only: bool = False) -> OffWorld:
    """Whether ``question`` is off-world for a character of ``lang`` whose era's words are ``modern``.
    ``things_only``: only when it names a thing her book never writes (a listed word, a foreign word, a
    name): a reader's question, where "the book does not tell" must not meet 最后那次 or 哪里 (words of
    today's Chinese that 红楼梦 writes otherwise: 4 of 84 book questions were taken with every rule)."""
    from persona.guard import modern_words
    from persona.tone import closeness

    strange = strange_words(question, vocab, names)
    listed = modern_words(question, modern)
    words = tuple(dict.fromkeys([*listed, *strange]))
    if listed:
        return OffWorld("modern words: " + ", ".join(listed), words)
    if lang == "zh" and _LATIN.search(question):
        return OffWorld("a foreign word", words)
    if not things_only and lang == "zh" and sum(_segmenter(tuple(names)).FREQ.get(w, 0) > 0 for w in strange) >= STRANGE_WORDS:
        return OffWorld("words her book never writes: " + ", ".join(strange), words)
    if not things_only and lang == "en" and sum(w[0].islower() for w in strange) >= STRANGE_WORDS:
        return OffWorld("words her book never writes: " + ", ".join(strange), words)
    named = _capitalised_inside(question, strange) if lang == "en" else _proper_nouns(strange, vocab)
    if named:
        return OffWorld("names her book never writes: " + ", ".join(named), words)
    if things_only:
        return OffWorld()
    score = closeness(question, bank)
    if score >= threshold:
        return OffWorld(f"close to an off-world request ({score:.2f})", words)
    # Not from another world, but a thing in it she has never heard of is still not hers to take up
    # (你玩过王者荣耀吗？ -> 我曾和宝玉一起去玩过王者荣耀。): its nouns her book never writes.
    return OffWorld("", tuple(w for w in strange if _named_thing(w, names)) if lang == "zh" else ())


def warm(card: Any, bank: tuple[str, ...] = ()) -> None:
    """Do before her first question what its turn would otherwise wait for (~1-3 s on 2 cores): mine her
    book's vocabulary, copy jieba's dictionary with her names, load its parts of speech (Chinese) and embed
    the off-world requests."""
    from persona.tone import closeness

    book_vocabulary(card)
    _segmenter(tuple(card.names))
    if card.lang == "zh":
        _noun("列车")
    if bank:
        closeness(bank[0], bank)

