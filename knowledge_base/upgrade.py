"""The background index upgrade of a character's store (USE -> EmbeddingGemma, or e5 where EmbeddingGemma
is not assembled), one process per character.

A click on "Upgrade" (or a build) starts ``gen_chroma.py upgrade`` detached; before this, every
click started another, and several e5 embedders fought over two cores. Now the running upgrade
holds an flock on ``stores/<id>/upgrade.lock`` for its whole life (the kernel drops it when the
process dies, so a crash never leaves the character locked), and ``upgrade.pid`` says who it is;
a pid whose process is gone (or is another program now) is stale and reported as none.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import locks
from characters import safe_id
from knowledge_base import windows
from knowledge_base.embedders import get_embedder
from knowledge_base.store import (
    chroma_client,
    copy_index,
    collection_name,
    current_version,
    read_chunks,
    read_manifest,
    remove_version,
    set_current,
    store_root,
)
from knowledge_base.versions import (
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

# The indexes a background upgrade can move a store to, best first: EmbeddingGemma once assembled
# (scripts/install.sh does it; recall@5 on 红楼梦 0.79 / 0.80 against e5's 0.73 / 0.50), else e5.
UPGRADE_ORDER = ("embeddinggemma", "e5")
LOCK_FILE = "upgrade.lock"
PID_FILE = "upgrade.pid"


def claim(character_id: str) -> int | None:
    """Take the character's upgrade lock without waiting: the open descriptor that holds it, or None
    when another process holds it. Keep the descriptor open (or pass it to a child) for the upgrade's life."""
    return locks.claim(store_root(safe_id(character_id)) / LOCK_FILE)


def record_pid(character_id: str, pid: int) -> None:
    write_json(store_root(safe_id(character_id)) / PID_FILE, {"pid": pid, "started": time.time()})


def running(character_id: str) -> int | None:
    """The pid of the upgrade running for this character, or None.

    Read from upgrade.pid without touching the lock (a status poll must never make a click think an
    upgrade runs); a pid whose process is gone, or is now some other program, is stale: None.
    """
    try:
        pid = int(json.loads((store_root(safe_id(character_id)) / PID_FILE).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None  # no such process
    return pid if b"upgrade" in cmdline else None


def forget_pid(character_id: str) -> None:
    """Remove upgrade.pid if it names this process (at the end of an upgrade)."""
    if running(character_id) == os.getpid():
        (store_root(safe_id(character_id)) / PID_FILE).unlink(missing_ok=True)


def upgrade_target() -> str:
    """The best index this machine can build: EmbeddingGemma where it is assembled, else e5."""
    from knowledge_base import gemma

    return UPGRADE_ORDER[0] if gemma.is_ready() else UPGRADE_ORDER[1]


def eta_text(seconds: float | None) -> str:
    """", about 12 min left" (or seconds under two minutes); "" when no estimate exists yet."""
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return ""
    return f", about {seconds:.0f} s left" if seconds < 120 else f", about {seconds / 60:.0f} min left"


def upgrade_status(character_id: str) -> dict:
    """Progress of the background index upgrade ({} when none ran)."""
    path = store_root(safe_id(character_id)) / "upgrade.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def upgrade(character_id: str, target: str | None = None, progress: Progress | None = None) -> bool:
    """Embed every chunk with the better embedder, then swap in a version that searches with it.

    Embedding runs without the build lock (vectors go to the shared cache batch by batch),
    so a user's build is never blocked for minutes; only the final swap takes the lock and
    uses whatever version is live at that moment. Returns True when the swap happened.
    """
    progress = progress or noop
    target = target or upgrade_target()
    cid = safe_id(character_id)
    root = store_root(cid)
    status_path = root / "upgrade.json"
    started = time.time()

    def report(stage: str, done: int, total: int) -> None:
        progress(stage, done, total)
        rate = done / max(time.time() - started, 1e-6)
        write_json(status_path, {"target": target, "stage": stage, "done": done, "total": total,
                                  "started": started, "updated": time.time(), "pid": os.getpid(),
                                  "eta_s": round((total - done) / rate, 1) if rate > 0 and done else None})

    emb = get_embedder(target)
    for _attempt in range(3):  # a build may land meanwhile: embed what it added, then swap
        version = current_version(root)
        if version is None:
            raise FileNotFoundError(f"'{cid}' has no store to upgrade; build it first.")
        chunks = read_chunks(version)
        vectors, wins = windows.embed_chunks(emb, chunks, vector_cache_path(root),
                                             lambda d, t: report("embed", d, t))
        with store_lock(root):
            if current_version(root) != version:
                continue
            manifest = read_manifest(version)
            new = new_version(root)
            try:
                copy_index(version, new)
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
                add_vectors(col, chunks, vectors, lambda s, d, t: report("store", d, t))
                if wins is not None:
                    windows.save(new, target, [c["id"] for c in chunks], wins)
                manifest["dense"][target] = {"collection": cname, "dim": emb.dim, "complete": True}
                manifest["active"] = target
                manifest["created"] = time.time()
                write_json(new / "manifest.json", manifest)
            except BaseException:
                remove_version(new)
                raise
            set_current(root, new)
            retire(version)
            cleanup(root, {new.name, version.name})
            report("done", len(chunks), len(chunks))
            return True
    return False
