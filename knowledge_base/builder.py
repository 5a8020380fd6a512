"""Build or update a character's knowledge store: incremental, atomic, with progress.

Files are compared by sha256 with the live version's manifest: unchanged files keep
their chunks and vectors, changed or removed ones are replaced. Every build writes a
new version folder beside the live one and swaps CURRENT only when it is complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from characters import Card, create_character, exists, load_card, safe_id, save_card, texts_dir, writable_dir
from fileio import sha256_file
from knowledge_base import keywords
from knowledge_base.chunking import chunk_document
from knowledge_base import windows
from knowledge_base.embedders import get_embedder
from knowledge_base.reading import TEXT_SUFFIXES, ReadError, read_document
from knowledge_base.store import (
    FORMAT,
    chroma_client,
    collection_name,
    copy_index,
    current_version,
    read_chunks,
    read_manifest,
    remove_version,
    set_current,
    store_root,
)
from knowledge_base.upgrade import UPGRADE_ORDER, upgrade, upgrade_status, upgrade_target  # noqa: F401  (re-exported)
from knowledge_base.versions import (
    ADD_BATCH,
    Progress,
    add_vectors,
    cleanup,
    new_version,
    retire,
    noop,
    store_lock,
    vector_cache_path,
    write_json,
)
from language import detect_lang
from settings import load_settings

FAST_EMBEDDER = "use"  # what makes a new book searchable quickly
REPLACED = ".replaced"  # texts/.replaced/ keeps every replaced book (hidden: never read into the store)


@dataclass
class BuildReport:
    character: str
    files: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    renamed: list[dict] = field(default_factory=list)  # {"file", "as"}: a new book whose name was taken
    replaced: list[dict] = field(default_factory=list)  # {"file", "kept"}: the old book, kept in texts/.replaced/
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0
    embedder: str = ""
    version: str = ""
    up_to_date: bool = False
    upgrade_pending: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


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


def import_files(character_id: str, inputs: list[str | Path], report: BuildReport, replace: bool = False) -> None:
    """Copy readable books into the character's texts folder; unreadable ones are skipped with a reason.

    A different book under a name already taken is saved as "name (2).txt", never over the other
    one; with ``replace`` it takes the name and the old file is kept in texts/.replaced/.
    """
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
        if dest.exists() and (dest.resolve() == src.resolve() or sha256_file(dest) == sha256_file(src)):
            continue  # the same book again
        if dest.exists() and replace:
            report.replaced.append({"file": dest.name, "kept": str(_keep_replaced(dest))})
        elif dest.exists():
            dest = _free_name(dest)
            report.renamed.append({"file": src.name, "as": dest.name})
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)


def _free_name(path: Path) -> Path:
    """``path`` with " (2)", " (3)", ... before its suffix: the first name not yet taken."""
    n = 2
    while (candidate := path.with_name(f"{path.stem} ({n}){path.suffix}")).exists():
        n += 1
    return candidate


def _keep_replaced(path: Path) -> Path:
    """Move a book about to be replaced to texts/.replaced/<time>-<name>, where it can be restored from."""
    kept_dir = path.parent / REPLACED
    kept_dir.mkdir(exist_ok=True)
    kept = kept_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.name}"
    kept = _free_name(kept) if kept.exists() else kept
    os.replace(path, kept)
    return kept


def _scan(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        f.relative_to(folder).as_posix(): f
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)  # .replaced/, .part files
    }


def book_files(character_id: str) -> list[Path]:
    """The books a character's store is built from: her texts folder's readable files, hidden ones left out."""
    return list(_scan(texts_dir(safe_id(character_id))).values())


def build(
    character_id: str,
    inputs: list[str | Path] | None = None,
    name: str | None = None,
    lang: str | None = None,
    embedder: str | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
    replace: bool = False,
) -> BuildReport:
    """Add ``inputs`` to a character's texts and bring its store up to date (``replace``: see import_files)."""
    progress = progress or noop
    started = time.monotonic()
    cid = safe_id(character_id)
    report = BuildReport(character=cid)
    card = _ensure_card(cid, name, lang, inputs)
    root = store_root(cid)
    with store_lock(root):
        import_files(cid, list(inputs or []), report, replace=replace)
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
        version = new_version(root)
        try:
            _write_version(cid, card, version, prev if reuse else None, files, hashes, dense, report, progress)
        except BaseException:
            remove_version(version)  # nothing half-built is ever left pointing anywhere
            raise
        set_current(root, version)
        retire(prev)
        cleanup(root, {version.name} | ({prev.name} if prev else set()))
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
                lang = detect_lang(read_document(src).text)
                break
            except ReadError:
                continue
    return create_character(cid, name=name or cid, language=lang or "zh")


def _upgrade_wanted(manifest: dict, wanted: str) -> bool:
    return wanted == "auto" and not manifest["dense"].get(upgrade_target(), {}).get("complete", False)


def _write_version(cid: str, card: Card, version: Path, prev: Path | None, files: dict[str, Path],
                   hashes: dict[str, str], dense: str, report: BuildReport, progress: Progress) -> None:
    """Fill a fresh version folder: chunks, dense collection(s), keyword index, manifest."""
    keep = set(report.unchanged)
    old_chunks = [c for c in read_chunks(prev) if c["source"] in keep] if prev else []
    prev_m = read_manifest(prev) if prev else {"dense": {}, "files": {}}
    # Tokens depend on the names in the store's dictionary: reuse them only while the names are the same.
    old_tokens = _read_tokens(prev) if prev and prev_m.get("names") == card.names else {}
    if prev:
        copy_index(prev, version)
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
    # The keyword index's tokens (jieba: pure Python, one core) are cut in a thread meanwhile: the embedder
    # waits on its worker processes (``in_workers``) or on numpy, which let the thread run.
    # Progress is reported from this thread only: the page's progress bar cannot be drawn from another.
    tokenize, given_up, tokens = keywords.tokenizer_for(card.names), threading.Event(), []

    def cut_all() -> None:
        for c in all_chunks:
            if given_up.is_set():
                return
            tokens.append(old_tokens.get(c["id"]) or tokenize(c["text"]))

    with ThreadPoolExecutor(1) as cutter:
        cut = cutter.submit(cut_all)
        try:
            with emb.in_workers(len(missing)):
                vectors, wins = windows.embed_chunks(emb, missing, vector_cache_path(version.parent),
                                                     lambda d, t: progress("embed", d, t))
            while not wait([cut], timeout=0.5).done:
                progress("keywords", len(tokens), len(all_chunks))
            cut.result()  # its exception, if any, raised here
        except BaseException:
            given_up.set()  # an interrupted build should not wait for the rest of the book's tokens
            raise
    progress("keywords", len(tokens), len(all_chunks))
    report.embedded = len(missing)
    add_vectors(col, missing, vectors, progress)
    if wins is not None:  # this build's windows, beside those of the chunks it kept
        windows.carry(prev or version, version, dense, keep_ids, [c["id"] for c in missing], wins)
    for ename, info in indexes.items():  # an index that stays complete (files only removed) keeps its windows
        if prev and ename != dense and info["complete"]:
            windows.carry(prev, version, ename, keep_ids, [], [])
    indexes[dense] = {"collection": cname, "dim": emb.dim, "complete": True}

    # Keyword index over every chunk (tokens of unchanged chunks are reused), with the store's own names.
    (version / "bm25").mkdir()
    keywords.KeywordIndex.build(tokens).save(version / "bm25")
    with (version / "tokens.jsonl").open("w", encoding="utf-8") as fh:
        for c, t in zip(all_chunks, tokens, strict=True):
            fh.write(json.dumps({"id": c["id"], "t": t}, ensure_ascii=False) + "\n")
    with (version / "chunks.jsonl").open("w", encoding="utf-8") as fh:
        for c in all_chunks:
            fh.write(json.dumps(c, ensure_ascii=False) + "\n")

    # The best complete index is searched (a book added after an upgrade falls back to USE until the next one).
    active = next((e for e in (*UPGRADE_ORDER, dense) if indexes.get(e, {}).get("complete")), dense)
    if dense not in (FAST_EMBEDDER, *UPGRADE_ORDER):
        active = dense  # a user-chosen embedder is always the one searched
    manifest = {
        "format": FORMAT, "character": cid, "language": card.language, "names": card.names,
        "dense": indexes, "active": active, "files": file_info, "chunks": len(all_chunks),
        "created": time.time(),
    }
    write_json(version / "manifest.json", manifest)
    report.chunks = len(all_chunks)


def _read_tokens(version: Path) -> dict[str, list[str]]:
    path = version / "tokens.jsonl"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        return {r["id"]: r["t"] for r in map(json.loads, fh) if r}
