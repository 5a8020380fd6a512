"""The knowledge base under hostile conditions: no network, a build killed midway, a 50 MB book.
Each runs the real code in a child process (that is where these failures happen)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from knowledge_base.builder import build
from knowledge_base.store import KnowledgeStore, current_version, read_manifest, store_root
from settings import paths
from tests.kb_books import EN_CHAPTERS, ZH_TEXT, children, write

REPO = Path(__file__).resolve().parent.parent

# A socket probe every sandbox must fail: a public IP (no DNS needed) and a DNS lookup.
PROBE = textwrap.dedent("""
    import socket
    def blocked():
        try:
            socket.create_connection(("1.1.1.1", 443), timeout=3).close()
            return False
        except OSError:
            pass
        try:
            socket.getaddrinfo("pypi.org", 443)
            return False
        except OSError:
            return True
""")

# Fallback when network namespaces are not available: refuse every non-loopback connection.
SITECUSTOMIZE = textwrap.dedent("""
    import socket
    _real_connect = socket.socket.connect
    _real_getaddrinfo = socket.getaddrinfo
    def _local(host):
        return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            raise OSError(101, "Network is unreachable (blocked by the test)")
        return _real_connect(self, address)
    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _local(host if isinstance(host, str) else host.decode()):
            raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by the test)")
        return _real_getaddrinfo(host, *args, **kwargs)
    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo
""")


def _has_netns() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def offline_command(tmp_path: Path, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` run with no network at all: a fresh network namespace, else a socket-blocking sitecustomize."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "*"}
    if _has_netns():
        return ["unshare", "-n", *argv], env
    site = tmp_path / "offline_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return argv, env


@pytest.mark.slow
def test_build_and_search_work_with_no_network(tmp_path):
    book = write(tmp_path / "in" / "hong.txt", ZH_TEXT)
    script = PROBE + textwrap.dedent(f"""
        import contextlib, io, json, sys
        sys.path.insert(0, {str(REPO)!r})
        assert blocked(), "the sandbox still reaches the network"
        import gen_chroma
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc_build = gen_chroma.main(["build", "lin", {str(book)!r}, "--json", "--quiet", "--no-upgrade"])
            rc_search = gen_chroma.main(["search", "lin", "妙玉泡茶用的什么水", "--json"])
        print(json.dumps({{"rc": [rc_build, rc_search], "out": out.getvalue()}}))
    """)
    argv, env = offline_command(tmp_path, [sys.executable, "-c", script])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == [0, 0], proc.stderr[-2000:]
    decoder = json.JSONDecoder()
    report, end = decoder.raw_decode(result["out"])
    hits = json.loads(result["out"][end:])[0]["hits"]
    assert report["chunks"] > 0 and report["embedder"] == "use"
    assert "梅花上的雪" in hits[0]["text"]


def test_offline_sandbox_really_blocks_the_network(tmp_path):
    # Guards the test above against a sandbox that silently lets traffic through.
    argv, env = offline_command(tmp_path, [sys.executable, "-c", PROBE + "import sys; sys.exit(0 if blocked() else 1)"])
    assert subprocess.run(argv, env=env, timeout=60).returncode == 0
    # And the sitecustomize fallback alone blocks too (it is what runs where namespaces are not allowed).
    site = tmp_path / "site_only"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = PROBE + "import sys; sys.exit(0 if blocked() else 1)"
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


def _unique_english(paragraphs: int) -> str:
    """An English book whose paragraphs are all different (so the vector cache cannot skip any)."""
    base = [p for ps in EN_CHAPTERS.values() for p in ps]
    out = []
    for i in range(paragraphs):
        if i % 40 == 0:
            out.append(f"Chapter {i // 40 + 1}")
        out.append(f"On day {i} of the visit, as paragraph number {i * 7919 % 100003} records, "
                   + base[i % len(base)])
    return "\n\n".join(out) + "\n"


@pytest.mark.slow
def test_a_build_killed_while_embedding_leaves_the_old_store_answering(tmp_path):
    old = write(tmp_path / "in" / "hong.txt", ZH_TEXT)
    build("lin", [old], embedder="use")
    root = store_root("lin")
    v_old = current_version(root)
    big = write(tmp_path / "in" / "long.txt", _unique_english(1500))

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "gen_chroma.py"), "build", "lin", str(big), "--no-upgrade"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(b) for b in iter(lambda: proc.stderr.read1(4096), b"")],
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    cache = root / "vectors.sqlite"

    def embedded_rows() -> int:
        try:
            with sqlite3.connect(cache, timeout=5) as db:
                return db.execute("SELECT count(*) FROM vec").fetchone()[0]
        except sqlite3.Error:
            return 0

    rows_before = embedded_rows()
    # Wait until the child is embedding and has saved at least one batch of the new book.
    while time.monotonic() < deadline and proc.poll() is None:
        if b"embedding" in err and embedded_rows() > rows_before:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the build finished before it could be killed; use a longer text"
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    # Its embedding workers (a book this long is shared out among them) end with it, not idle forever.
    assert len(workers) >= 2
    while workers and time.monotonic() < deadline:
        workers = [w for w in workers if Path(f"/proc/{w}").exists()]
        time.sleep(0.2)
    assert not workers, "worker processes outlived their killed parent"

    # The old version still answers, with its old content only.
    assert current_version(root) == v_old
    KnowledgeStore._cache.clear()
    store = KnowledgeStore.open("lin")
    assert {c["source"] for c in store.chunks} == {"hong.txt"}
    assert "梅花上的雪" in store.search("妙玉泡茶用的什么水", k=1)[0].text
    assert embedded_rows() > rows_before  # the batches embedded before the kill are kept
    half_built = [p for p in root.glob("v-*") if p != v_old]

    # The next build completes (the copied book is already in the texts folder) and cleans up.
    report = build("lin", embedder="use")
    assert report.added == ["long.txt"] and report.unchanged == ["hong.txt"]
    assert not any(p.exists() for p in half_built)
    store = KnowledgeStore.open("lin")
    assert {c["source"] for c in store.chunks} == {"hong.txt", "long.txt"}
    assert store._collection.count() == len(store.chunks)
    assert store.search("On day 1234 of the visit", k=3)[0].source == "long.txt"


BIG_BUILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[2])
    from knowledge_base.builder import build
    from knowledge_base.embedders import get_embedder
    from knowledge_base.store import KnowledgeStore
    get_embedder("use")  # the baseline includes the loaded model
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    calls = {}
    def progress(stage, done, total):
        calls.setdefault(stage, []).append([done, total])
    report = build("big", [sys.argv[1]], embedder="use", progress=progress)
    hits = KnowledgeStore.open("big").search("Netherfield Park is let at last", k=3)
    print(json.dumps({"report": report.to_dict(), "progress": {s: [len(c), c[-1]] for s, c in calls.items()},
                      "base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "hit": hits[0].text if hits else ""}))
""")


@pytest.mark.slow
def test_a_50_mb_book_builds_with_progress_and_bounded_memory(tmp_path):
    block = ("\n\n".join(p for ps in EN_CHAPTERS.values() for p in ps) + "\n\n").encode()
    big = tmp_path / "in" / "huge.txt"
    big.parent.mkdir(parents=True)
    with big.open("wb") as fh:  # 50 MB of a repeated paragraph set, written without holding it in memory
        for _ in range(50 * 2**20 // len(block) + 1):
            fh.write(block)
    assert big.stat().st_size >= 50 * 2**20
    proc = subprocess.run([sys.executable, "-c", BIG_BUILD, str(big), str(REPO)], capture_output=True, text=True,
                          timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    report = out["report"]
    assert report["chunks"] > 50_000 and report["added"] == ["huge.txt"]
    for stage in ("read", "embed", "store", "keywords"):  # every stage reported, ending complete
        calls, (done, total) = out["progress"][stage]
        # The keywords are cut while the book is embedded: reported once where they were done first.
        assert calls >= (1 if stage == "keywords" else 2) and done == total > 0, stage
    assert out["progress"]["store"][1][1] == report["chunks"]
    growth_gb = (out["peak_kb"] - out["base_kb"]) / 2**20
    assert growth_gb < 3, f"peak RSS grew by {growth_gb:.2f} GB"
    assert "Netherfield Park is let at last" in out["hit"]
    assert read_manifest(current_version(paths().store("big")))["files"]["huge.txt"]["chunks"] == report["chunks"]
    # The README's 50 MB figures come from this line (run with -s to see it).
    print(f"\n50 MB book: {report['chunks']} chunks, build {report['seconds']} s, peak RSS +{growth_gb:.2f} GB")
