"""The keyword half of hybrid retrieval: BM25 (bm25s) over jieba tokens for Chinese and
word tokens for English, with a character's names and aliases in her store's own jieba
dictionary so that 林黛玉 / 颦儿 / 潇湘妃子 stay single tokens.

Each store tokenizes with a dictionary of jieba's words plus its own names only (a
``Tokenizer``): with one shared dictionary, a query's tokens depended on which characters the
process had opened before (each name also shifts every word's probability through jieba's total).
"""
from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

# bm25s imports jax where it can (mediapipe installs it) for a top-k that ``get_scores`` never uses, and runs it
# once at import: ~0.9 s and ~140 MB in every process that searches. jax is hidden while bm25s imports, and
# importable again afterwards (docs/knowledge_base.md, session 21).
_HIDE_JAX = "jax" not in sys.modules
if _HIDE_JAX:
    sys.modules["jax"] = None  # type: ignore[assignment]  # ``import jax`` raises ImportError meanwhile
try:
    import bm25s
finally:
    if _HIDE_JAX:
        del sys.modules["jax"]

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
# Question words and particles carry no topic; dropping them keeps BM25 on the content.
ZH_STOP = set(
    "的 了 是 在 和 与 及 也 都 就 又 而 之 其 这 那 这个 那个 这些 那些 什么 怎么 怎样 为什么 为何 如何 哪 哪里 哪儿 哪一 哪些 哪个 "
    "谁 吗 呢 吧 啊 呀 么 把 被 给 对 让 说 道 有 没有 我 你 他 她 它 我们 你们 他们 她们 一个 一 个 上 下 中 里 后来 后 时 时候 "
    "曾 叫 是否 还 去 来 到 着 过 得 地 会 能 要 想 很 最 第 回 章".split()
)
EN_STOP = set(
    "a an the of to in on at by for with from and or but is are was were be been being it its this that these those "
    "what which who whom whose when where why how did does do done has have had he she his her him they them their "
    "i you we me my your our us not no as so than then there here into about after before did said says mr mrs".split()
)
@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: Snowball, so "refused"/"refuse" and "dancing"/"dance" meet

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _base_jieba():
    """jieba's own dictionary, loaded once; never given names (each Tokenizer copies it)."""
    import jieba

    jieba.setLogLevel(60)  # jieba prints its dictionary loading to stderr otherwise
    tok = jieba.Tokenizer()
    tok.initialize()
    return tok


def _jieba_with(names: Iterable[str]):
    """A jieba.Tokenizer of its own: jieba's dictionary (copied, ~0.1 s) plus ``names``."""
    import jieba

    base = _base_jieba()
    tok = jieba.Tokenizer()
    tok.FREQ, tok.total, tok.initialized = dict(base.FREQ), base.total, True
    for w in names:
        if w and _CJK_RE.search(w):
            tok.add_word(w, freq=100000)
    return tok


def _en_tokens(text: str) -> list[str]:
    return _stemmer().stemWords([w for w in _WORD_RE.findall(text) if w not in EN_STOP])


def _bigrams(text: str) -> list[str]:
    """Overlapping character pairs inside runs of Chinese characters.

    jieba's dictionary is modern Chinese; classical novels (红楼梦) are full of words it
    splits wrongly, and character bigrams are the classic robust unit for Chinese IR.
    """
    out: list[str] = []
    for run in re.findall(r"[\u4e00-\u9fff]+", text):
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


class Tokenizer:
    """Content tokens of Chinese or English text, with one store's names kept whole."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = tuple(sorted({n for n in names if n}))
        self._jieba = _jieba_with(self.names)
        self._lock = threading.Lock()  # jieba.Tokenizer is not safe across threads

    def __call__(self, text: str) -> list[str]:
        lowered = text.lower()
        if not _CJK_RE.search(text):
            return _en_tokens(lowered)
        with self._lock:
            pieces = self._jieba.lcut_for_search(lowered)
        tokens: list[str] = []
        content: list[str] = []
        for p in pieces:
            p = p.strip()
            if not p or p in ZH_STOP:
                continue
            if _CJK_RE.search(p):
                tokens.append(p)
                content.append(p)
            else:
                tokens.extend(_en_tokens(p))
                content.append(" ")
        # Bigrams of the text with stop words removed, so question words add no noise.
        tokens.extend("#" + b for b in _bigrams(" ".join(content)) if b not in ZH_STOP)
        return tokens


@lru_cache(maxsize=8)
def _shared(names: tuple[str, ...]) -> Tokenizer:
    return Tokenizer(names)


def tokenizer_for(names: Iterable[str]) -> Tokenizer:
    """The tokenizer of a store whose characters go by ``names``: one per set of names, since its
    state depends on the names alone (stores of one character share it)."""
    return _shared(tuple(sorted({n for n in names if n})))


def tokenize(text: str) -> list[str]:
    """Content tokens with jieba's dictionary alone (no store's names): for text outside any store."""
    return tokenizer_for(())(text)


class KeywordIndex:
    """BM25 over pre-tokenised chunks; scores every chunk for a query in milliseconds."""

    def __init__(self, retriever: bm25s.BM25, vocab: set[str]) -> None:
        self._bm25 = retriever
        self._vocab = vocab

    @classmethod
    def build(cls, token_lists: list[list[str]]) -> KeywordIndex:
        bm = bm25s.BM25()
        # bm25s refuses an empty corpus or all-empty docs; a placeholder token keeps ids aligned.
        bm.index([t or ["\u2400"] for t in token_lists], show_progress=False)
        return cls(bm, {w for toks in token_lists for w in toks})

    def save(self, folder: Path) -> None:
        self._bm25.save(str(folder), show_progress=False)
        (folder / "vocab.json").write_text(json.dumps(sorted(self._vocab), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> KeywordIndex:
        bm = bm25s.BM25.load(str(folder), show_progress=False)
        vocab = set(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
        return cls(bm, vocab)

    def scores(self, query_tokens: list[str]) -> tuple[np.ndarray, float]:
        """BM25 score of every chunk, and the share of query tokens the corpus knows.

        The share tells hybrid search how much to trust the keyword side: an English
        question over a Chinese book has no known tokens, and its BM25 ranks are noise.
        """
        known = [t for t in query_tokens if t in self._vocab]
        coverage = len(known) / len(query_tokens) if query_tokens else 0.0
        if not known:
            return np.zeros(0, np.float32), 0.0
        return np.asarray(self._bm25.get_scores(known), np.float32), coverage
