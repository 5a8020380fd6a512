"""Embeddings cached on disk by (embedder, text hash): unchanged passages are never
embedded twice, across incremental builds, background upgrades and interrupted runs."""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class VectorCache:
    """A small SQLite table of float32 vectors, one per (embedder, text)."""

    def __init__(self, path: Path, embedder: str, dim: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (embedder TEXT, key TEXT, v BLOB, PRIMARY KEY (embedder, key))")
        self.embedder, self.dim = embedder, dim

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, v FROM vec WHERE embedder=? AND key IN ({','.join('?' * len(part))})",
                [self.embedder, *part],
            )
            found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vec VALUES (?, ?, ?)",
                [(self.embedder, k, np.asarray(v, np.float32).tobytes()) for k, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()


def embed_with_cache(
    texts: list[str],
    embed: Callable[[list[str]], np.ndarray],
    cache: VectorCache,
    batch: int,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Vectors for ``texts``, embedding only those not cached; each batch is saved as it is done."""
    keys = [text_key(t) for t in texts]
    known = cache.get_many(sorted(set(keys)))
    todo = [k for k in dict.fromkeys(keys) if k not in known]
    by_key = dict(zip(keys, texts, strict=True))
    done = len(set(keys)) - len(todo)
    total = len(set(keys))
    if on_progress:
        on_progress(done, total)
    for i in range(0, len(todo), batch):
        if should_stop and should_stop():
            raise InterruptedError("stopped")
        part = todo[i : i + batch]
        vecs = embed([by_key[k] for k in part])
        fresh = dict(zip(part, vecs, strict=True))
        cache.put_many(fresh)
        known.update(fresh)
        done += len(part)
        if on_progress:
            on_progress(done, total)
    if not keys:
        return np.zeros((0, cache.dim), np.float32)
    return np.stack([known[k] for k in keys])
