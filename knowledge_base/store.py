"""A character's knowledge store on disk, and hybrid search over it.

Layout under ``stores/<character>/``::

    CURRENT                 name of the live version folder (replaced atomically)
    v-<time>-<pid>/         one complete build: manifest.json, chroma/, bm25/, chunks.jsonl
    upgrade.json            progress of a background index upgrade, if any

With ``chroma_url`` set, the vectors, the passages and the pointer live on a Chroma server and the
version folders are a local cache of the small files (knowledge_base/remote.py says how the swap stays atomic).

A build writes a new version folder aside and only then points CURRENT at it, so an
interrupted build leaves the previous version answering. The manifest records the
embedder, its dimension and the Chroma collection name: opening the store with
another embedder is refused, and a missing or empty collection is an error.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from characters import safe_id
from fileio import write_text_atomic
from knowledge_base import keywords, remote
from knowledge_base.embedders import get_embedder
from knowledge_base.windows import WindowIndex, window_spans
from settings import paths

FORMAT = 1
# Fusion settings, chosen on bench/data/retrieval_questions.json and checked on the held-out set
# (bench/kb_bench.py): a smaller RRF constant than the usual 60 lets a retriever's top ranks count.
RRF_K = 30
CANDIDATES = 50  # per retriever, before fusion
SECOND_OPINION = 0.5  # weight of a complete dense index other than the active one (USE beside e5)
# A passage's neighbours in its source add this share of their score: the episode a question is
# about usually spans several chunks, and the answer sits beside the ones that match best.
NEIGHBOUR_WEIGHT = 0.2
# Active indexes strong enough to rank alone: the weak rankers' votes (USE, BM25, neighbour sharing)
# pull EmbeddingGemma down. On P&P (bench/kb_fusion.py, bench/results/kb_fusion_pp.json) it scored
# recall@5 0.62 / 0.75 (ours / held-out) alone and 0.50 / 0.55 fused as for e5; the 红楼梦
# figures fell the same way (0.79 alone, 0.50-0.74 fused). No fusion weight beat it alone there.
RANKS_ALONE = {"embeddinggemma"}
# BM25's scores, z-scored and weighted by how much of the question the book knows, may be added at this
# share to its z-scored cosines (scores, not ranks: rank fusion is what pulled it down). Session 17
# (bench/kb_search.py): at 0.1 recall@5 rose on 红楼梦 (0.82 / 0.80 -> 0.88 / 0.83, ours / held-out) and fell
# on P&P's held-out set (0.75 -> 0.65) with the second look; without it 0.88 / 0.83 / 0.56 / 0.75 but the
# first passage worse. No net gain over 100 questions, so off (docs/knowledge_base.md).
KEYWORD_SHARE = 0.0


READ_BATCH = 5000  # vectors read from Chroma per call when a version is opened


class StoreError(RuntimeError):
    """The store is missing, empty or built differently; the message says how to fix it."""


@dataclass
class Hit:
    text: str
    source: str
    chapter: str
    score: float
    chunk_id: str
    index: int = 0
    matched: list[str] = field(default_factory=list)  # query words found in the passage
    # (start, end, score) of each two-sentence window of ``text`` for this query, where the active index
    # saved window vectors (knowledge_base/windows.py): excerpts choose sentences by them.
    windows: list[tuple[int, int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def for_sources(self) -> dict:
        """What a reader's sources show and a conversation saves: the hit without its window scores."""
        return {k: v for k, v in self.to_dict().items() if k != "windows"}


@dataclass
class DenseIndex:
    """One embedder's vectors, row-aligned with the store's chunks, searched exactly (brute force)."""

    name: str
    matrix: np.ndarray  # (chunks, dim) float32, L2-normalised; zero rows for chunks it lacks
    weight: float = 1.0

    def top(self, vec: np.ndarray, n: int) -> list[int]:
        """Rows of the n best cosine scores, ties broken by row: identical in every process."""
        scores = self.matrix @ np.asarray(vec, np.float32)
        order = np.argsort(-scores, kind="stable")[:n]
        return [int(r) for r in order]


def _query_vector(query: str, index: DenseIndex) -> np.ndarray:
    return get_embedder(index.name).embed([query], query=True)[0]


def store_root(character_id: str) -> Path:
    return paths().store(safe_id(character_id))


def collection_name(character_id: str, embedder: str) -> str:
    """A Chroma-legal collection name (3-63 chars of [a-zA-Z0-9._-]) for any character id."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", character_id).strip("-")[:24] or "c"
    digest = hashlib.sha1(character_id.encode()).hexdigest()[:8]
    emb = re.sub(r"[^a-zA-Z0-9]+", "-", embedder).strip("-")[:20]
    return f"zy-{slug}-{digest}-{emb}"


def chroma_client(folder: Path):
    """The Chroma collections of one version (``folder`` is its ``chroma/``): persistent files, or the
    Chroma server of ``chroma_url`` (knowledge_base/remote.py). Telemetry off: this app never phones home."""
    if remote.url():
        return remote.VersionClient(folder.parent.parent.name, folder.parent.name)
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(path=str(folder), settings=ChromaSettings(anonymized_telemetry=False))


def current_version(root: Path) -> Path | None:
    """The live version folder: CURRENT's, or with a Chroma server the pointer's (its files fetched once)."""
    if remote.url():
        name = remote.live_version(root.name)
        if name is None:
            return None
        version = root / name
        if not (version / "manifest.json").is_file():
            remote.materialise(root, name)
        return version if (version / "manifest.json").is_file() else None
    marker = root / "CURRENT"
    if not marker.is_file():
        return None
    version = root / marker.read_text(encoding="utf-8").strip()
    return version if (version / "manifest.json").is_file() else None


def set_current(root: Path, version: Path) -> None:
    """Point CURRENT (and a Chroma server's pointer) at a finished version, atomically."""
    if remote.url():
        remote.publish(root.name, version)  # the swap every machine sees
    write_text_atomic(root / "CURRENT", version.name)


def copy_index(prev: Path, version: Path) -> None:
    """Start a new version from the dense indexes of ``prev`` (files copied, or collections on the server)."""
    if remote.url():
        names = [i["collection"] for i in read_manifest(prev)["dense"].values()]
        remote.copy_collections(prev.parent.name, prev.name, version.name, names)
    else:
        shutil.copytree(prev / "chroma", version / "chroma")


def read_manifest(version: Path) -> dict:
    return json.loads((version / "manifest.json").read_text(encoding="utf-8"))


def read_chunks(version: Path) -> list[dict]:
    with (version / "chunks.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class KnowledgeStore:
    """An opened version of a character's store; ``search`` is hybrid dense + BM25."""

    _cache: dict[tuple[str, str, str], KnowledgeStore] = {}
    _cache_lock = threading.Lock()

    def __init__(self, character_id: str, version: Path, embedder: str | None = None) -> None:
        self.character_id = character_id
        self.version = version
        self.manifest = read_manifest(version)
        if self.manifest.get("format") != FORMAT:
            raise StoreError(
                f"The store of '{character_id}' was written by another version of Zhiyin; rebuild it with "
                f"`python gen_chroma.py build {character_id} --rebuild`."
            )
        indexes = self.manifest["dense"]  # embedder name -> {collection, dim, complete}
        active = self.manifest["active"]
        if embedder and embedder not in ("auto", active):
            if embedder in indexes and indexes[embedder].get("complete"):
                active = embedder
            else:
                built = ", ".join(f"'{n}' ({i['dim']}-d)" for n, i in indexes.items())
                raise StoreError(
                    f"The store of '{character_id}' was built with {built}, not '{embedder}'. Rebuild it with "
                    f"`python gen_chroma.py build {character_id} --embedder {embedder} --rebuild`, or search "
                    f"with the embedder it was built with."
                )
        self.embedder_name = active
        info = indexes[active]
        self.collection_name = info["collection"]
        self.dim = int(info["dim"])
        self.chunks = read_chunks(version)
        self._row = {c["id"]: i for i, c in enumerate(self.chunks)}
        client = chroma_client(version / "chroma")
        self._collection = self._open_collection(client, self.collection_name)
        count = self._collection.count()
        if count == 0 or not self.chunks:
            raise StoreError(
                f"The store of '{character_id}' is empty: no passages to search. Add a book with "
                f"`python gen_chroma.py build {character_id} PATH/TO/BOOK.txt`."
            )
        # Ranking is exact search over the vectors read once from Chroma (its HNSW query is approximate
        # and returned a different top 50 for the same question in two processes). Every other complete
        # dense index is searched too, as a second opinion (USE beside e5).
        self._dense_indexes = [DenseIndex(active, self._read_vectors(self._collection), 1.0)] + [
            DenseIndex(name, self._read_vectors(self._open_collection(client, i["collection"])), SECOND_OPINION)
            for name, i in indexes.items() if name != active and i.get("complete")
        ]
        # A second look at the active index's best candidates by their two-sentence windows, where the
        # upgrade saved them (knowledge_base/windows.py).
        self._windows = WindowIndex.load(version, active, self._row) if active in RANKS_ALONE else None
        self.tokenize = keywords.tokenizer_for(self.manifest.get("names", []))  # this store's own jieba state
        self._keywords = keywords.KeywordIndex.load(version / "bm25")
        self._idf: dict[str, float] = {}
        self._lowered: list[str] | None = None
        self._spans: dict[int, list[tuple[int, int]]] = {}  # a chunk's windows, cut once (~0.2 ms each)

    def _open_collection(self, client: Any, name: str) -> Any:
        try:
            return client.get_collection(name, embedding_function=None)
        except Exception as exc:  # chromadb raises NotFoundError/ValueError depending on version
            raise StoreError(
                f"The store of '{self.character_id}' has no collection '{name}' "
                f"(it may have been opened under another name or damaged); rebuild it with "
                f"`python gen_chroma.py build {self.character_id} --rebuild`."
            ) from exc

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, character_id: str, embedder: str | None = None) -> KnowledgeStore:
        """The live version of a character's store (cached per process, refreshed after a rebuild)."""
        cid = safe_id(character_id)
        root = store_root(cid)
        version = current_version(root)
        if version is None:
            raise StoreError(
                f"'{cid}' has no knowledge store yet. Build it with `python gen_chroma.py build {cid}` "
                f"(add PATH/TO/BOOK.txt to give it a book)."
            )
        key = (str(root), version.name, embedder or "")
        with cls._cache_lock:
            store = cls._cache.get(key)
            if store is None:
                store = cls(cid, version, embedder)
                for old in [k for k in cls._cache if k[0] == key[0]]:
                    del cls._cache[old]
                cls._cache[key] = store
        return store

    @classmethod
    def exists(cls, character_id: str) -> bool:
        return current_version(store_root(character_id)) is not None

    # ---- searching -----------------------------------------------------------------------
    def _read_vectors(self, collection: Any) -> np.ndarray:
        """The collection's vectors as a matrix row-aligned with ``self.chunks`` (missing rows stay zero)."""
        matrix: np.ndarray | None = None
        total = collection.count()
        for offset in range(0, total, READ_BATCH):
            got = collection.get(include=["embeddings"], limit=READ_BATCH, offset=offset)
            vecs = np.asarray(got["embeddings"], dtype=np.float32)
            if matrix is None:
                matrix = np.zeros((len(self.chunks), vecs.shape[1]), np.float32)
            for cid, vec in zip(got["ids"], vecs, strict=True):
                row = self._row.get(cid)
                if row is not None:
                    matrix[row] = vec
        return matrix if matrix is not None else np.zeros((len(self.chunks), self.dim), np.float32)

    def _dense(self, query: str, n: int, index: DenseIndex | None = None) -> list[int]:
        """Rows of the n nearest chunks in one dense index (default: the active one), exactly."""
        index = index or self._dense_indexes[0]
        return index.top(_query_vector(query, index), n)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The k passages that best answer ``query``, best first (dense + BM25, rank-fused)."""
        query = query.strip()
        if not query:
            return []
        q_tokens = self.tokenize(query)
        alone = self.embedder_name in RANKS_ALONE
        # An index that ranks alone reads BM25's scores only when it is given a share of them (~0.2 ms).
        bm25, coverage = (np.zeros(0, np.float32), 0.0) if alone and not KEYWORD_SHARE else self._keywords.scores(q_tokens)
        fused: dict[int, float] = {}
        if alone:
            index = self._dense_indexes[0]
            vec = _query_vector(query, index)
            rows, base, scale = self._alone(vec, index, bm25, coverage)
            if self._windows is not None:
                rows = self._windows.second_look(vec, index.matrix, rows, base, scale)
            fused = {row: 1.0 / (RRF_K + rank) for rank, row in enumerate(rows)}
        else:
            for index in self._dense_indexes:
                vec = _query_vector(query, index)
                for rank, row in enumerate(index.top(vec, CANDIDATES)):
                    fused[row] = fused.get(row, 0.0) + index.weight / (RRF_K + rank)
            if coverage > 0:
                top = np.argsort(-bm25, kind="stable")[:CANDIDATES]
                # Weighted by how much of the question the book's vocabulary knows (see KeywordIndex.scores).
                for rank, row in enumerate(r for r in top if bm25[r] > 0):
                    fused[int(row)] = fused.get(int(row), 0.0) + coverage / (RRF_K + rank)
            fused = self._with_neighbours(fused)
        best = sorted(fused, key=lambda r: (-fused[r], r))[:k]  # ties broken by position: repeatable
        hits = []
        scored = self._window_scores(vec, best) if alone else [[] for _ in best]
        for row, windows_of_row in zip(best, scored, strict=True):
            c = self.chunks[row]
            low = c["text"].lower()
            matched = sorted({t for t in q_tokens if t in low}, key=len, reverse=True)
            hits.append(Hit(c["text"], c["source"], c["chapter"], round(fused[row] * RRF_K, 4), c["id"],
                            c["index"], matched, windows_of_row))
        return hits

    @staticmethod
    def _alone(vec: np.ndarray, index: DenseIndex, bm25: np.ndarray,
               coverage: float) -> tuple[list[int], np.ndarray, float]:
        """An index that ranks alone: its best CANDIDATES rows by z-scored cosine plus KEYWORD_SHARE of
        z-scored BM25 (times the question's coverage), those scores, and the cosines' spread."""
        sims = index.matrix @ np.asarray(vec, np.float32)
        scale = max(float(sims.std()), 1e-6)
        score = (sims - sims.mean()) / scale
        if coverage > 0 and KEYWORD_SHARE and len(bm25) == len(sims):
            score = score + KEYWORD_SHARE * coverage * (bm25 - bm25.mean()) / max(float(bm25.std()), 1e-6)
        order = np.argsort(-score, kind="stable")[:CANDIDATES]  # ties by row: identical in every process
        return [int(r) for r in order], score, scale

    def _window_scores(self, vec: np.ndarray, rows: list[int]) -> list[list[tuple[int, int, float]]]:
        """Each row's windows as (start, end, the query's cosine), for the hits a reader turn excerpts."""
        if self._windows is None:
            return [[] for _ in rows]
        out = []
        for row, scores in zip(rows, self._windows.scores(vec, rows), strict=True):
            if row not in self._spans:
                self._spans[row] = window_spans(self.chunks[row]["text"])
            spans = self._spans[row]
            # More: saved under other sentence rules, no scores rather than wrong ones. Fewer: the windows
            # past the model's input length were cut off with the text.
            out.append([] if len(scores) > len(spans) else
                       [(s, e, round(float(x), 4)) for (s, e), x in zip(spans, scores, strict=False)])
        return out

    def idf(self, word: str) -> float:
        """How rare ``word`` is in the book: log inverse share of the passages that contain it (cached)."""
        if word not in self._idf:
            if self._lowered is None:
                self._lowered = [c["text"].lower() for c in self.chunks]
            holding = sum(word in t for t in self._lowered)
            self._idf[word] = math.log(1 + len(self._lowered) / (1 + holding))
        return self._idf[word]

    def _with_neighbours(self, fused: dict[int, float]) -> dict[int, float]:
        """Each candidate plus NEIGHBOUR_WEIGHT of the scores of the chunks beside it in the same source."""
        out = dict(fused)
        for row, score in fused.items():
            for near in (row - 1, row + 1):
                if 0 <= near < len(self.chunks) and self.chunks[near]["source"] == self.chunks[row]["source"]:
                    out[near] = out.get(near, 0.0) + NEIGHBOUR_WEIGHT * score
        return out

    def neighbours(self, hit: Hit, before: int = 1, after: int = 1) -> str:
        """The hit's passage with its neighbouring chunks from the same source, for more context."""
        row = self._row[hit.chunk_id]
        rows = [r for r in range(row - before, row + after + 1)
                if 0 <= r < len(self.chunks) and self.chunks[r]["source"] == hit.source]
        text = ""
        for r in rows:
            text = _join_overlapping(text, self.chunks[r]["text"])
        return text

    def stats(self) -> dict:
        m = self.manifest
        return {
            "character": self.character_id,
            "version": self.version.name,
            "embedder": self.embedder_name,
            "dim": self.dim,
            "collection": self.collection_name,
            "searching": [self.embedder_name] + (["windows"] if self._windows is not None else [])
            if self.embedder_name in RANKS_ALONE
            else [index.name for index in self._dense_indexes] + ["bm25"],
            "indexes": {n: {"dim": i["dim"], "complete": i["complete"]} for n, i in m["dense"].items()},
            "files": len(m["files"]),
            "chunks": len(self.chunks),
            "characters": sum(f["chars"] for f in m["files"].values()),
            "built": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["created"])),
        }


def _join_overlapping(first: str, second: str) -> str:
    """``first`` + ``second`` without the overlap a chunk carries over from the one before it."""
    if not first:
        return second
    for n in range(min(len(first), len(second)), 0, -1):
        if first.endswith(second[:n]) and (n > 8 or n == len(second)):  # a few letters could be chance
            return first + second[n:]
    sep = " " if first[-1:].isascii() and second[:1].isascii() else ""
    return first + sep + second


def remove_version(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if remote.url():
        remote.drop_version(folder.parent.name, folder.name)
