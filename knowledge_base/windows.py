"""A second look at the best candidates: two-sentence windows inside each passage, embedded for free.

EmbeddingGemma pools a passage's vector as the mean of its token vectors. The same forward pass gives,
for every window of two consecutive sentences, the mean of that window's token vectors (late pooling):
a vector per window at no extra model cost, each read in the context of its whole passage. At search
time the first DEPTH passages by their own vector are ordered again by PASSAGE_WEIGHT x passage score +
the rest x best window score, so a passage in which one or two sentences answer the question moves up.
On both novels' 100 questions (docs/knowledge_base.md) it raised recall@1 by 4 (+6 before the shared
splitter) and recall@5 by 1, and costs well under a millisecond per search.

Window vectors live in ``<version>/windows/<embedder>-<hash>.npz`` (chunk ids, window counts, float16 vectors)
and in the vector cache under ``<embedder>#windows<N>`` (N: WINDOW_RULES, bumped when the split changes).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from knowledge_base.embedders import Embedder, passage_inputs
from knowledge_base.vector_cache import VectorCache, embed_with_cache, text_key
from language import detect_lang
from sentences import split_sentences

DEPTH = 20  # candidates looked at again (EmbeddingGemma's top 20 held the answer 0.75-0.91 of the time)
PASSAGE_WEIGHT = 0.75  # chosen on our question sets, checked on the held-out ones
WINDOW_RULES = 2  # 2: sentences from sentences.split_sentences (1 had its own splitter, cut at "Mr.")
FOLDER = "windows"


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text`` (the one splitter, ``sentences.split_sentences``); very
    short ones are joined to the one before."""
    spans, start = [], 0
    for piece in split_sentences(text, keep_space=True):  # the pieces join back into ``text`` exactly
        if piece.strip():
            spans.append((start, start + len(piece)))
        start += len(piece)
    shortest = 12 if detect_lang(text) == "zh" else 40  # characters: 「是。」 or "Yes, sir." alone say little
    joined: list[tuple[int, int]] = []
    for s, e in spans:
        if joined and len(text[s:e].strip()) < shortest:
            joined[-1] = (joined[-1][0], e)
        else:
            joined.append((s, e))
    return joined


def window_spans(text: str) -> list[tuple[int, int]]:
    """Each pair of consecutive sentences (the whole text when it is one sentence)."""
    sents = sentence_spans(text)
    if len(sents) < 2:
        return sents
    return [(sents[i][0], sents[i + 1][1]) for i in range(len(sents) - 1)]


def embed_chunks(emb: Embedder, chunks: list[dict], cache_path: Path,
                 progress: Callable[[int, int], None]) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Vectors of ``chunks`` (from the vector cache where it has them) and, with an embedder that pools
    spans, the vectors of each chunk's windows (None otherwise). Each batch is cached as it is done."""
    texts = passage_inputs(emb, chunks)
    vectors = VectorCache(cache_path, emb.name, emb.dim)
    try:
        if not emb.pools_spans:
            return embed_with_cache(texts, emb.embed, vectors, emb.batch, progress), None
        windows = VectorCache(cache_path, f"{emb.name}#windows{WINDOW_RULES}", emb.dim)
        try:
            return _embed_both(emb, chunks, texts, vectors, windows, progress)
        finally:
            windows.close()
    finally:
        vectors.close()


def _embed_both(emb: Embedder, chunks: list[dict], texts: list[str], vectors: VectorCache, windows: VectorCache,
                progress: Callable[[int, int], None]) -> tuple[np.ndarray, list[np.ndarray]]:
    keys = [text_key(t) for t in texts]
    spans = {}
    for key, text, chunk in zip(keys, texts, chunks, strict=True):
        shift = len(text) - len(chunk["text"])  # the document prompt in front of the chunk's text
        spans[key] = [(s + shift, e + shift) for s, e in window_spans(chunk["text"])]
    unique = list(dict.fromkeys(keys))
    have_v, have_w = vectors.get_many(unique), windows.get_many(unique)
    by_key = dict(zip(keys, texts, strict=True))
    # Longest first: batches of like lengths (in book order a quarter of 红楼梦's tokens were padding), and
    # the ETA, taken from the rate so far, errs long rather than short.
    todo = sorted((k for k in unique if k not in have_v or k not in have_w), key=lambda k: -len(by_key[k]))
    done = len(unique) - len(todo)
    progress(done, len(unique))
    for i in range(0, len(todo), emb.batch):
        part = todo[i : i + emb.batch]
        vecs, wins = emb.embed_spans([by_key[k] for k in part], [spans[k] for k in part])
        vectors.put_many(dict(zip(part, vecs, strict=True)))
        windows.put_many({k: w.reshape(-1) for k, w in zip(part, wins, strict=True)})
        have_v.update(zip(part, vecs, strict=True))
        have_w.update((k, w.reshape(-1)) for k, w in zip(part, wins, strict=True))
        done += len(part)
        progress(done, len(unique))
    if not keys:
        return np.zeros((0, emb.dim), np.float32), []
    return np.stack([have_v[k] for k in keys]), [have_w[k].reshape(-1, emb.dim) for k in keys]


def _file(version: Path, name: str) -> Path:
    """``windows/<name>.npz``; an embedder name may hold a path (``st:/models/x``): made file-safe."""
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-.")[:40]
    return version / FOLDER / f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.npz"


def save(version: Path, name: str, ids: list[str], windows: list[np.ndarray]) -> None:
    """Write the window vectors of the chunks ``ids`` (replacing the file of ``name`` in ``version``)."""
    path = _file(version, name)
    path.parent.mkdir(exist_ok=True)
    dim = next((w.shape[1] for w in windows if w.size), 0)
    stacked = np.concatenate([w for w in windows if w.size]) if dim else np.zeros((0, 0), np.float32)
    tmp = path.with_name("." + path.name)
    with tmp.open("wb") as fh:
        np.savez(fh, ids=np.asarray(ids, dtype=str), counts=np.asarray([len(w) for w in windows], np.int32),
                 vectors=stacked.astype(np.float16))
    tmp.replace(path)


def carry(prev: Path, version: Path, name: str, keep: set[str], ids: list[str], windows: list[np.ndarray]) -> None:
    """A build's windows: those of ``prev`` for the chunks it keeps, plus the freshly embedded ones."""
    old = load_raw(prev, name)
    if old is None and not ids:
        return
    if old is not None:
        fresh = set(ids)
        pairs = [(i, w) for i, w in zip(*old, strict=True) if i in keep and i not in fresh]
        ids, windows = [i for i, _ in pairs] + ids, [w for _, w in pairs] + windows
    save(version, name, ids, windows)


def load_raw(version: Path, name: str) -> tuple[list[str], list[np.ndarray]] | None:
    path = _file(version, name)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        ids, counts, vectors = data["ids"].tolist(), data["counts"], data["vectors"]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return ids, [vectors[bounds[i] : bounds[i + 1]] for i in range(len(ids))]


class WindowIndex:
    """The window vectors of one dense index, by chunk row; reorders that index's best candidates."""

    def __init__(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self._rows = rows  # chunk row of each window, sorted
        self._vectors = vectors  # float16 as saved (~35 MB for 红楼梦); a candidate's few are cast per search

    @classmethod
    def load(cls, version: Path, name: str, row_of: dict[str, int]) -> WindowIndex | None:
        """The windows saved for ``name`` in ``version``, or None when it has none (a plain index)."""
        raw = load_raw(version, name)
        if raw is None:
            return None
        rows, vecs = [], []
        for cid, w in zip(*raw, strict=True):
            if cid in row_of and len(w):
                rows.extend([row_of[cid]] * len(w))
                vecs.append(w)
        if not vecs:
            return None
        order = np.argsort(np.asarray(rows), kind="stable")
        return cls(np.asarray(rows)[order], np.concatenate(vecs)[order])

    def scores(self, query: np.ndarray, rows: list[int]) -> list[np.ndarray]:
        """The query's cosine with each window of each chunk in ``rows``, in the passage's order: one
        product for them all (a product per chunk took ~4 ms a search for 20 candidates, this ~0.3)."""
        if not rows:
            return []
        bounds = np.searchsorted(self._rows, np.asarray(rows + [r + 1 for r in rows]))
        lo, hi = bounds[: len(rows)], bounds[len(rows) :]
        sims = self._vectors[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])].astype(np.float32) @ query
        return np.split(sims, np.cumsum(hi - lo)[:-1])

    def second_look(self, query: np.ndarray, passages: np.ndarray, ranked: list[int],
                    base: np.ndarray | None = None, scale: float = 1.0) -> list[int]:
        """``ranked`` (rows of ``passages``, the index's matrix) with its first DEPTH rows ordered again
        by passage and best-window score: PASSAGE_WEIGHT × passage + the rest × best window. ``base``: the
        rows' search scores in units of ``scale`` cosines (store: z-scored cosines plus BM25's share), to
        which the best window's lead over its passage is added at the same weight."""
        head = ranked[:DEPTH]
        own = passages[head] @ query
        scores = []
        for i, (row, windows) in enumerate(zip(head, self.scores(query, head), strict=True)):
            best = float(windows.max()) if len(windows) else float(own[i])
            start = float(own[i]) if base is None else float(base[row]) * scale  # own + (1 - w)(best - own) = w·own + (1 - w)·best
            scores.append(start + (1 - PASSAGE_WEIGHT) * (best - float(own[i])))
        order = sorted(range(len(head)), key=lambda i: (-scores[i], head[i]))  # ties by position: repeatable
        return [head[i] for i in order] + ranked[DEPTH:]
