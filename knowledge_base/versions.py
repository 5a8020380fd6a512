"""What the builder and the background upgrade share: the writer lock, version folders, the vector
cache, adding vectors to Chroma in batches, and atomic JSON."""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fileio import write_text_atomic
from knowledge_base.store import remove_version
from knowledge_base.vector_cache import VectorCache

Progress = Callable[[str, int, int], None]  # (stage, done, total)
ADD_BATCH = 1000  # Chroma refuses very large single adds


def noop(stage: str, done: int, total: int) -> None:
    pass


@contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """One writer per character at a time (a second build waits for the first)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def vector_cache_path(root: Path) -> Path:
    return root / "vectors.sqlite"


def vector_cache(root: Path, name: str, dim: int) -> VectorCache:
    return VectorCache(vector_cache_path(root), name, dim)


def add_vectors(collection, chunks: list[dict], vectors, progress: Progress) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(chunks), ADD_BATCH):
        part = chunks[i : i + ADD_BATCH]
        collection.add(
            ids=[c["id"] for c in part],
            embeddings=vectors[i : i + ADD_BATCH],
            documents=[c["text"] for c in part],
            metadatas=[{"source": c["source"], "chapter": c["chapter"], "index": c["index"]} for c in part],
        )
        progress("store", min(i + ADD_BATCH, len(chunks)), len(chunks))


def new_version(root: Path) -> Path:
    folder = root / f"v-{int(time.time() * 1000)}-{os.getpid()}"
    folder.mkdir(parents=True)
    return folder


RETIRED = "RETIRED"  # written into a version when another replaces it
# Another process (the page, the API) may be in the middle of a search on a version that was just
# replaced; it reopens the live one at its next turn, so a retired version is kept this long.
RETIRED_GRACE_S = 600


def retire(version: Path | None) -> None:
    """Mark a version as replaced now (``cleanup`` keeps it for RETIRED_GRACE_S)."""
    if version is not None and version.is_dir():
        (version / RETIRED).write_text(str(time.time()), encoding="utf-8")


def cleanup(root: Path, keep: set[str]) -> None:
    """Drop versions that are neither live nor the previous one (including interrupted builds),
    except those retired less than RETIRED_GRACE_S ago."""
    for folder in root.glob("v-*"):
        if folder.name in keep:
            continue
        marker = folder / RETIRED
        if marker.is_file() and time.time() - marker.stat().st_mtime < RETIRED_GRACE_S:
            continue
        remove_version(folder)


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))
