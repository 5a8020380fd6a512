"""Build or update a character's knowledge store: incremental, atomic, with progress.

Files are compared by sha256 with the live version's manifest: unchanged files keep
their chunks and vectors, changed or removed ones are replaced. Every build writes a
new version folder beside the live one and swaps CURRENT only when it is complete.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from characters import Card, create_character, exists, load_card, safe_id, save_card, texts_dir, writable_dir
from fileio import sha256_file, write_text_atomic
from knowledge_base import keywords
from knowledge_base.chunking import chunk_document, detect_language
from knowledge_base.embedders import get_embedder, passage_inputs
from knowledge_base.reading import TEXT_SUFFIXES, ReadError, read_document
from knowledge_base.store import (
    FORMAT,
    chroma_client,
    collection_name,
    current_version,
    read_chunks,
    read_manifest,
    remove_version,
    set_current,
    store_root,
)
from knowledge_base.vector_cache import VectorCache, embed_with_cache
from settings import load_settings

Progress = Callable[[str, int, int], None]  # (stage, done, total)
FAST_EMBEDDER = "use"  # what makes a new book searchable quickly
UPGRADE_EMBEDDER = "e5"  # what the background upgrade moves the index to
ADD_BATCH = 1000  # Chroma refuses very large single adds


@dataclass
class BuildReport:
    character: str
    files: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0
    embedder: str = ""
    version: str = ""
    up_to_date: bool = False
    upgrade_pending: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _noop(stage: str, done: int, total: int) -> None:
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


def safe_filename(name: str) -> str:
    """A file name that cannot escape the texts folder, keeping letters of any script."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    base = re.sub(r"[\x00-\x1f/]", "_", base).lstrip(".") or "book.txt"
    return base[:150]


def _iter_inputs(inputs: list[str | Path]) -> Iterator[Path]:
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                              and not f.name.startswith("."))
        else:
            yield p


def import_files(character_id: str, inputs: list[str | Path], report: BuildReport) -> None:
    """Copy readable books into the character's texts folder; unreadable ones are skipped with a reason."""
    if not inputs:
        return
    dest_dir = writable_dir(character_id) / "texts"
    for src in _iter_inputs(inputs):
        try:
            read_document(src)  # validates encoding, emptiness, binariness before anything is copied
        except ReadError as exc:
            report.skipped.append({"file": str(src), "reason": str(exc)})
            continue
        dest = dest_dir / safe_filename(src.name)
        if dest.exists() and dest.resolve() == src.resolve():
            continue
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # a changed book replaces the old one in one step


def _scan(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        f.relative_to(folder).as_posix(): f
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES and not f.name.startswith(".")
    }


def _cache(root: Path, name: str, dim: int) -> VectorCache:
    return VectorCache(root / "vectors.sqlite", name, dim)


def _add_vectors(collection, chunks: list[dict], vectors, progress: Progress) -> None:
    for i in range(0, len(chunks), ADD_BATCH):
        part = chunks[i : i + ADD_BATCH]
        collection.add(
            ids=[c["id"] for c in part],
            embeddings=vectors[i : i + ADD_BATCH],
            documents=[c["text"] for c in part],
            metadatas=[{"source": c["source"], "chapter": c["chapter"], "index": c["index"]} for c in part],
        )
        progress("store", min(i + ADD_BATCH, len(chunks)), len(chunks))


def _new_version(root: Path) -> Path:
    folder = root / f"v-{int(time.time() * 1000)}-{os.getpid()}"
    folder.mkdir(parents=True)
    return folder


RETIRED = "RETIRED"  # written into a version when another replaces it
# Another process (the page, the API) may be in the middle of a search on a version that was just
# replaced; it reopens the live one at its next turn, so a retired version is kept this long.
RETIRED_GRACE_S = 600


def _retire(version: Path | None) -> None:
    if version is not None and version.is_dir():
        (version / RETIRED).write_text(str(time.time()), encoding="utf-8")


def _cleanup(root: Path, keep: set[str]) -> None:
    """Drop versions that are neither live nor the previous one (including interrupted builds),
    except those retired less than RETIRED_GRACE_S ago."""
    for folder in root.glob("v-*"):
        if folder.name in keep:
            continue
        marker = folder / RETIRED
        if marker.is_file() and time.time() - marker.stat().st_mtime < RETIRED_GRACE_S:
            continue
        remove_version(folder)


def build(
    character_id: str,
    inputs: list[str | Path] | None = None,
    name: str | None = None,
    lang: str | None = None,
    embedder: str | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Add ``inputs`` to a character's texts and bring its store up to date."""
    progress = progress or _noop
    started = time.monotonic()
    cid = safe_id(character_id)
    report = BuildReport(character=cid)
    card = _ensure_card(cid, name, lang, inputs)
    root = store_root(cid)
    with store_lock(root):
        import_files(cid, list(inputs or []), report)
        files = _scan(texts_dir(cid))
        report.files = len(files)
        if not files:
            # Say why the given files were skipped: the report never reaches the user here.
            why = " ".join(f"Skipped {s['reason']}" for s in report.skipped)
            raise ReadError(
                f"'{cid}' has no readable texts yet. {why + ' ' if why else ''}Give a book: "
                f"`python gen_chroma.py build {cid} PATH/TO/BOOK.txt`."
            )
        hashes = {rel: sha256_file(p) for rel, p in files.items()}
        prev = current_version(root)
        prev_m = read_manifest(prev) if prev else None
        if prev_m and prev_m.get("format") != FORMAT:
            prev, prev_m = None, None
        wanted = embedder or load_settings().embedder
        dense = FAST_EMBEDDER if wanted == "auto" else wanted
        reuse = bool(prev_m) and not rebuild and dense in prev_m["dense"]
        old_files = prev_m["files"] if reuse else {}
        report.unchanged = sorted(r for r in hashes if old_files.get(r, {}).get("sha256") == hashes[r])
        report.changed = sorted(r for r in hashes if r in old_files and r not in report.unchanged)
        report.added = sorted(r for r in hashes if r not in old_files)
        report.removed = sorted(r for r in old_files if r not in hashes)
        report.embedder = dense
        if reuse and not (report.changed or report.added or report.removed) and prev_m.get("names") == card.names:
            report.up_to_date, report.chunks, report.version = True, prev_m["chunks"], prev.name
            report.upgrade_pending = _upgrade_wanted(prev_m, wanted)
            report.seconds = round(time.monotonic() - started, 2)
            return report
        keywords.add_words(card.names)
        version = _new_version(root)
        try:
            _write_version(cid, card, version, prev if reuse else None, files, hashes, dense, report, progress)
        except BaseException:
            remove_version(version)  # nothing half-built is ever left pointing anywhere
            raise
        set_current(root, version)
        _retire(prev)
        _cleanup(root, {version.name} | ({prev.name} if prev else set()))
        report.version = version.name
        report.upgrade_pending = _upgrade_wanted(read_manifest(version), wanted)
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _ensure_card(cid: str, name: str | None, lang: str | None, inputs) -> Card:
    if exists(cid):
        card = load_card(cid)
        if name and name != card.name and name not in card.aliases:
            card.aliases.append(name)
            save_card(card)
        return card
    if lang is None:  # guess from the first readable input
        for src in _iter_inputs(list(inputs or [])):
            try:
                lang = detect_language(read_document(src).text)
                break
            except ReadError:
                continue
    return create_character(cid, name=name or cid, language=lang or "zh")


def _upgrade_wanted(manifest: dict, wanted: str) -> bool:
    return wanted == "auto" and not manifest["dense"].get(UPGRADE_EMBEDDER, {}).get("complete", False)


def _write_version(cid: str, card: Card, version: Path, prev: Path | None, files: dict[str, Path],
                   hashes: dict[str, str], dense: str, report: BuildReport, progress: Progress) -> None:
    """Fill a fresh version folder: chunks, dense collection(s), keyword index, manifest."""
    keep = set(report.unchanged)
    old_chunks = [c for c in read_chunks(prev) if c["source"] in keep] if prev else []
    old_tokens = _read_tokens(prev) if prev else {}
    prev_m = read_manifest(prev) if prev else {"dense": {}, "files": {}}
    if prev:
        shutil.copytree(prev / "chroma", version / "chroma")
    client = chroma_client(version / "chroma")

    # Read and chunk the new and changed files.
    new_chunks: list[dict] = []
    file_info = {r: prev_m["files"][r] for r in keep}
    todo = [r for r in files if r not in keep]
    for n, rel in enumerate(todo):
        progress("read", n, len(todo))
        try:
            doc = read_document(files[rel])
        except ReadError as exc:
            report.skipped.append({"file": rel, "reason": str(exc)})
            continue
        pieces = chunk_document(doc, rel, card.language if card.language in ("zh", "en") else None)
        new_chunks.extend({"id": c.id, "text": c.text, "source": c.source, "chapter": c.chapter,
                           "index": c.index, "start": c.start} for c in pieces)
        file_info[rel] = {"sha256": hashes[rel], "chars": len(doc.text), "encoding": doc.encoding,
                          "chapters": len(doc.chapters), "chunks": len(pieces)}
    progress("read", len(todo), len(todo))
    all_chunks = old_chunks + new_chunks
    if not all_chunks:
        raise ReadError(f"None of '{cid}''s texts could be read; see the skipped files above.")
    keep_ids = {c["id"] for c in all_chunks}

    # Dense indexes: drop vectors of changed/removed files; embed the new chunks with `dense`.
    indexes: dict[str, dict] = {}
    for ename, info in prev_m["dense"].items():
        col = client.get_collection(info["collection"], embedding_function=None)
        stale = [i for i in col.get(include=[])["ids"] if i not in keep_ids]
        for i in range(0, len(stale), ADD_BATCH):
            col.delete(ids=stale[i : i + ADD_BATCH])
        indexes[ename] = dict(info, complete=info["complete"] and not new_chunks)
    emb = get_embedder(dense)
    cname = collection_name(cid, dense)
    col = client.get_or_create_collection(
        cname, embedding_function=None,
        metadata={"embedder": dense, "dim": emb.dim, "character": cid, "hnsw:space": "cosine"},
    )
    have = set(col.get(include=[])["ids"]) if dense in prev_m["dense"] else set()
    missing = [c for c in all_chunks if c["id"] not in have]
    cache = _cache(version.parent, dense, emb.dim)
    try:
        vectors = embed_with_cache(passage_inputs(emb, missing), emb.embed, cache, emb.batch,
                                   lambda d, t: progress("embed", d, t))
    finally:
        cache.close()
    report.embedded = len(missing)
    _add_vectors(col, missing, vectors, progress)
    indexes[dense] = {"collection": cname, "dim": emb.dim, "complete": True}

    # Keyword index over every chunk (tokens of unchanged chunks are reused).
    tokens = []
    for n, c in enumerate(all_chunks):
        if n % 500 == 0:
            progress("keywords", n, len(all_chunks))
        tokens.append(old_tokens.get(c["id"]) or keywords.tokenize(c["text"]))
    progress("keywords", len(all_chunks), len(all_chunks))
    (version / "bm25").mkdir()
    keywords.KeywordIndex.build(tokens).save(version / "bm25")
    with (version / "tokens.jsonl").open("w", encoding="utf-8") as fh:
        for c, t in zip(all_chunks, tokens, strict=True):
            fh.write(json.dumps({"id": c["id"], "t": t}, ensure_ascii=False) + "\n")
    with (version / "chunks.jsonl").open("w", encoding="utf-8") as fh:
        for c in all_chunks:
            fh.write(json.dumps(c, ensure_ascii=False) + "\n")

    active = next((e for e in (UPGRADE_EMBEDDER, dense) if indexes.get(e, {}).get("complete")), dense)
    if dense not in (FAST_EMBEDDER, UPGRADE_EMBEDDER):
        active = dense  # a user-chosen embedder is always the one searched
    manifest = {
        "format": FORMAT, "character": cid, "language": card.language, "names": card.names,
        "dense": indexes, "active": active, "files": file_info, "chunks": len(all_chunks),
        "created": time.time(),
    }
    _write_json(version / "manifest.json", manifest)
    report.chunks = len(all_chunks)


def _read_tokens(version: Path) -> dict[str, list[str]]:
    path = version / "tokens.jsonl"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        return {r["id"]: r["t"] for r in map(json.loads, fh) if r}


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


# ---- background upgrade ---------------------------------------------------------------------
def upgrade_status(character_id: str) -> dict:
    """Progress of the background index upgrade ({} when none ran)."""
    path = store_root(safe_id(character_id)) / "upgrade.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def upgrade(character_id: str, target: str = UPGRADE_EMBEDDER, progress: Progress | None = None) -> bool:
    """Embed every chunk with the better embedder, then swap in a version that searches with it.

    Embedding runs without the build lock (vectors go to the shared cache batch by batch),
    so a user's build is never blocked for minutes; only the final swap takes the lock and
    uses whatever version is live at that moment. Returns True when the swap happened.
    """
    progress = progress or _noop
    cid = safe_id(character_id)
    root = store_root(cid)
    status_path = root / "upgrade.json"
    started = time.time()

    def report(stage: str, done: int, total: int) -> None:
        progress(stage, done, total)
        rate = done / max(time.time() - started, 1e-6)
        _write_json(status_path, {"target": target, "stage": stage, "done": done, "total": total,
                                  "started": started, "updated": time.time(), "pid": os.getpid(),
                                  "eta_s": round((total - done) / rate, 1) if rate > 0 and done else None})

    emb = get_embedder(target)
    for _attempt in range(3):  # a build may land meanwhile: embed what it added, then swap
        version = current_version(root)
        if version is None:
            raise FileNotFoundError(f"'{cid}' has no store to upgrade; build it first.")
        chunks = read_chunks(version)
        cache = _cache(root, target, emb.dim)
        try:
            vectors = embed_with_cache(passage_inputs(emb, chunks), emb.embed, cache, emb.batch,
                                       lambda d, t: report("embed", d, t))
        finally:
            cache.close()
        with store_lock(root):
            if current_version(root) != version:
                continue
            manifest = read_manifest(version)
            new = _new_version(root)
            try:
                shutil.copytree(version / "chroma", new / "chroma")
                for f in ("chunks.jsonl", "tokens.jsonl"):
                    shutil.copyfile(version / f, new / f)
                shutil.copytree(version / "bm25", new / "bm25")
                client = chroma_client(new / "chroma")
                cname = collection_name(cid, target)
                try:
                    client.delete_collection(cname)
                except Exception:  # not there yet: nothing to replace
                    pass
                col = client.create_collection(
                    cname, embedding_function=None,
                    metadata={"embedder": target, "dim": emb.dim, "character": cid, "hnsw:space": "cosine"},
                )
                _add_vectors(col, chunks, vectors, lambda s, d, t: report("store", d, t))
                manifest["dense"][target] = {"collection": cname, "dim": emb.dim, "complete": True}
                manifest["active"] = target
                manifest["created"] = time.time()
                _write_json(new / "manifest.json", manifest)
            except BaseException:
                remove_version(new)
                raise
            set_current(root, new)
            _retire(version)
            _cleanup(root, {new.name, version.name})
            report("done", len(chunks), len(chunks))
            return True
    return False
