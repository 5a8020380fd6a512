"""Stores on a Chroma server (the ``chroma_url`` setting): app and API processes on several machines share them.

On the server, per character (``h`` a digest of her id, ``e`` a digest of an index's logical name):

    zy<h>-current             one record naming the live version: the pointer
    zy<h>-chunks.<version>    one record per passage (text, source, chapter, row, its BM25 tokens);
                              the collection's metadata holds the version's manifest
    zy<h>-<e>.<version>       one collection per dense index of that version (USE, e5, ...)

On each machine, ``stores/<id>/<version>/`` caches the version's small files (manifest, chunks, tokens,
BM25), written from the server the first time a process there opens that version.

Atomic swap: a build (or the e5 upgrade) writes a new version's collections beside the live ones,
publishes its passages, and only then upserts the pointer record. One record's upsert is one entry
in the server's write-ahead log, applied whole, so a reader gets the old version or the new one,
never a mix; every collection the new version names was complete before the pointer moved. A failed
build never touches the pointer, and its collections are deleted. Replaced versions stay 10 minutes
(builder.RETIRED_GRACE_S) for processes still searching them. Builds are serialised by a file lock on
the building machine: run builds from one machine (the others only read).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

BATCH = 1000  # records per request (a server refuses very large ones)
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def url() -> str:
    """The Chroma server's URL from the settings ('' = embedded files)."""
    from settings import load_settings

    return load_settings().chroma_url.strip()


def server() -> Any:
    """The HttpClient of ``chroma_url`` (one per process and URL), telemetry off."""
    address = url()
    with _lock:
        if address not in _clients:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            parsed = urlparse(address if "://" in address else f"http://{address}")
            _clients[address] = chromadb.HttpClient(
                host=parsed.hostname or "localhost", port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https", settings=ChromaSettings(anonymized_telemetry=False))
        return _clients[address]


def _digest(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def prefix(cid: str) -> str:
    return f"zy{_digest(cid, 10)}-"


def pointer_name(cid: str) -> str:
    return prefix(cid) + "current"


def chunks_name(cid: str, version: str) -> str:
    return f"{prefix(cid)}chunks.{version}"


def dense_name(cid: str, logical: str, version: str) -> str:
    """The server name of one dense index of one version (Chroma allows 63 characters)."""
    return f"{prefix(cid)}{_digest(logical, 8)}.{version}"


class VersionClient:
    """The collections of one version under their logical names (what builder and store ask for)."""

    def __init__(self, cid: str, version: str) -> None:
        self.cid, self.version = cid, version
        self._server = server()

    def _name(self, logical: str) -> str:
        return dense_name(self.cid, logical, self.version)

    def get_collection(self, name: str, embedding_function: Any = None) -> Any:
        return self._server.get_collection(self._name(name), embedding_function=embedding_function)

    def get_or_create_collection(self, name: str, embedding_function: Any = None, metadata: dict | None = None) -> Any:
        meta = dict(metadata or {}, logical=name, version=self.version)
        return self._server.get_or_create_collection(self._name(name), embedding_function=embedding_function,
                                                     metadata=meta)

    def create_collection(self, name: str, embedding_function: Any = None, metadata: dict | None = None) -> Any:
        meta = dict(metadata or {}, logical=name, version=self.version)
        return self._server.create_collection(self._name(name), embedding_function=embedding_function, metadata=meta)

    def delete_collection(self, name: str) -> None:
        self._server.delete_collection(self._name(name))


# ---------------------------------------------------------------------------- the pointer
def live_version(cid: str) -> str | None:
    """The version the pointer names (None when the character has no store on the server)."""
    try:
        pointer = server().get_collection(pointer_name(cid), embedding_function=None)
    except Exception:  # NotFoundError: never built on this server
        return None
    got = pointer.get(ids=["current"], include=["documents"])
    return got["documents"][0] if got["ids"] else None


def publish(cid: str, version: Path) -> None:
    """Upload the version's passages and manifest, then swap the pointer to it (the atomic step)."""
    srv = server()
    manifest = (version / "manifest.json").read_text(encoding="utf-8")
    chunks = [json.loads(line) for line in (version / "chunks.jsonl").read_text(encoding="utf-8").splitlines() if line]
    tokens: dict[str, list[str]] = {}
    tokens_file = version / "tokens.jsonl"
    if tokens_file.is_file():
        for line in tokens_file.read_text(encoding="utf-8").splitlines():
            if line:
                row = json.loads(line)
                tokens[row["id"]] = row["t"]
    name = chunks_name(cid, version.name)
    try:
        srv.delete_collection(name)  # a half-published earlier attempt of this same version
    except Exception:
        pass
    col = srv.create_collection(name, embedding_function=None,
                                metadata={"manifest": manifest, "character": cid, "version": version.name})
    for i in range(0, len(chunks), BATCH):
        part = chunks[i : i + BATCH]
        col.add(ids=[c["id"] for c in part], documents=[c["text"] for c in part],
                embeddings=[[1.0]] * len(part),  # the passages are read by id, never searched here
                metadatas=[{"source": c["source"], "chapter": c["chapter"], "index": int(c["index"]),
                            "start": int(c.get("start", 0)), "row": i + n,
                            "t": json.dumps(tokens.get(c["id"], []), ensure_ascii=False)} for n, c in enumerate(part)])
    pointer = srv.get_or_create_collection(pointer_name(cid), embedding_function=None, metadata={"character": cid})
    pointer.upsert(ids=["current"], documents=[version.name], embeddings=[[1.0]],
                   metadatas=[{"swapped": time.time()}])


# ---------------------------------------------------------------------- reading a version
def materialise(root: Path, version: str) -> Path | None:
    """Write a version's small files from the server into ``root/version`` (atomically); None if it is gone."""
    from knowledge_base.keywords import KeywordIndex

    cid = root.name
    try:
        col = server().get_collection(chunks_name(cid, version), embedding_function=None)
    except Exception:
        return None
    records: list[tuple[dict, str, str]] = []
    for offset in range(0, col.count(), BATCH):
        got = col.get(include=["documents", "metadatas"], limit=BATCH, offset=offset)
        records += list(zip(got["metadatas"], got["documents"], got["ids"], strict=True))
    records.sort(key=lambda r: r[0]["row"])
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{version}.{os.getpid()}.{threading.get_ident()}.part"
    tmp.mkdir()
    try:
        tokens = [json.loads(m["t"]) for m, _, _ in records]
        with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
            for m, text, rid in records:
                fh.write(json.dumps({"id": rid, "text": text, "source": m["source"], "chapter": m["chapter"],
                                     "index": m["index"], "start": m["start"]}, ensure_ascii=False) + "\n")
        with (tmp / "tokens.jsonl").open("w", encoding="utf-8") as fh:
            for (_, _, rid), t in zip(records, tokens, strict=True):
                fh.write(json.dumps({"id": rid, "t": t}, ensure_ascii=False) + "\n")
        (tmp / "bm25").mkdir()
        KeywordIndex.build(tokens).save(tmp / "bm25")
        (tmp / "manifest.json").write_text(col.metadata["manifest"], encoding="utf-8")
        os.rename(tmp, root / version)  # whole or not at all
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process wrote the same version first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root / version


# ----------------------------------------------------------------- copying and dropping
def copy_collections(cid: str, src: str, dst: str, logical_names: list[str]) -> None:
    """Copy each dense index of version ``src`` into version ``dst`` on the server (what copytree does locally)."""
    srv = server()
    for logical in logical_names:
        old = srv.get_collection(dense_name(cid, logical, src), embedding_function=None)
        new = srv.create_collection(dense_name(cid, logical, dst), embedding_function=None,
                                    metadata=dict(old.metadata or {}, version=dst))
        for offset in range(0, old.count(), BATCH):
            got = old.get(include=["embeddings", "documents", "metadatas"], limit=BATCH, offset=offset)
            if got["ids"]:
                new.add(ids=got["ids"], embeddings=got["embeddings"], documents=got["documents"],
                        metadatas=got["metadatas"])


def drop_version(cid: str, version: str) -> None:
    """Delete every collection of one version of this character from the server."""
    srv = server()
    for col in srv.list_collections():
        name = col if isinstance(col, str) else col.name
        if name.startswith(prefix(cid)) and name.endswith(f".{version}"):
            try:
                srv.delete_collection(name)
            except Exception:  # deleted meanwhile by another cleanup
                pass
