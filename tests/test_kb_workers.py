"""A long first build shares USE's batches out among two worker processes and cuts the keyword index's
tokens meanwhile: the same vectors as one process, a worker that dies is not fatal, an interrupted build
leaves no process behind, and the workers never run the caller's own script. Real worker processes, the
real packaged USE, real Chroma on disk."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from knowledge_base import embedders, workers
from knowledge_base.builder import build
from knowledge_base.embedders import get_embedder
from knowledge_base.store import KnowledgeStore, current_version, store_root
from tests.kb_books import ZH_TEXT, children, write


# ~30 passages: enough for every batch to be shared out (the shared books are a few passages each).
LONG = ZH_TEXT + "\n\n".join(f"第{n}回 又一回\n\n" + f"第{n}日宝玉又往潇湘馆去看黛玉，说了许多闲话。" * 12
                             for n in range(3, 40)) + "\n"


@pytest.fixture
def use_in_workers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Workers for any build (the real threshold is 400 passages), two of them whatever this machine has;
    each call's (passages, parts) is recorded."""
    monkeypatch.setattr(embedders, "WORKERS_FROM", 1)
    monkeypatch.setattr(get_embedder("use"), "_threads", 2)
    calls: list[tuple[int, int]] = []
    real = workers.Workers.map

    def counted(self: workers.Workers, method: str, items: list) -> list:
        out = real(self, method, items)
        calls.append((len(items), len(out)))
        return out

    monkeypatch.setattr(workers.Workers, "map", counted)
    return calls


def _stored_and_fresh(cid: str) -> tuple[np.ndarray, np.ndarray]:
    """The store's USE vectors, and the same passages embedded again in this process."""
    KnowledgeStore._cache.clear()
    store = KnowledgeStore.open(cid)
    fresh = get_embedder("use").embed([c["text"] for c in store.chunks])
    return store._dense_indexes[0].matrix, fresh


def test_a_long_build_embeds_in_two_processes_with_the_vectors_of_one(tmp_path, use_in_workers):
    report = build("lin", [write(tmp_path / "in" / "hong.txt", LONG)], embedder="use")
    assert report.embedded == report.chunks > 0
    assert use_in_workers and all(parts == 2 for _, parts in use_in_workers)
    assert sum(n for n, _ in use_in_workers) == report.chunks > 20
    stored, fresh = _stored_and_fresh("lin")
    assert np.min(np.sum(stored * fresh, axis=1)) > 0.9999
    assert not children(os.getpid())  # the workers are gone once the build is done
    assert "梅花上的雪" in KnowledgeStore.open("lin").search("妙玉泡茶用的什么水", k=1)[0].text


def test_workers_that_die_leave_the_build_to_one_process_with_a_warning(tmp_path, use_in_workers, monkeypatch,
                                                                        capsys):
    def broken(self: workers.Workers, method: str, items: list) -> list:
        raise workers.WorkerError("a worker died")

    monkeypatch.setattr(workers.Workers, "map", broken)
    report = build("lin", [write(tmp_path / "in" / "hong.txt", LONG)], embedder="use")
    assert report.embedded == report.chunks > 0
    assert "warning: the embedding workers stopped (a worker died); embedding in one process" in capsys.readouterr().err
    stored, fresh = _stored_and_fresh("lin")
    assert np.min(np.sum(stored * fresh, axis=1)) > 0.9999
    assert not children(os.getpid())


def test_an_interrupted_build_stops_its_workers_and_keeps_the_old_store(tmp_path, use_in_workers):
    build("lin", [write(tmp_path / "in" / "hong.txt", LONG)], embedder="use")
    before = current_version(store_root("lin"))

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "embed" and done > 0:
            raise KeyboardInterrupt

    more = LONG.replace("宝玉", "宝钗")
    with pytest.raises(KeyboardInterrupt):
        build("lin", [write(tmp_path / "in" / "more.txt", more)], embedder="use", progress=interrupt)
    assert current_version(store_root("lin")) == before
    assert not children(os.getpid())


def test_a_worker_that_fails_or_cannot_start_is_an_error_the_embedder_can_catch():
    with workers.started("knowledge_base.embedders:_use_alone", 2) as pool:
        assert pool is not None and pool.n == 2
        vecs = pool.map("encode", ["林黛玉", "薛宝钗", "贾宝玉"])
        assert [v.shape for v in vecs] == [(2, 512), (1, 512)]
        with pytest.raises(workers.WorkerError, match="AttributeError"):
            pool.map("no_such_method", ["a", "b"])
    with workers.started("knowledge_base.no_such_module:make", 2) as pool, \
            pytest.raises(workers.WorkerError, match="ended"):
        pool.map("encode", ["a", "b"])
    assert not children(os.getpid())


# A script without the ``if __name__ == "__main__":`` guard (Streamlit runs the page as ``__main__`` too): the
# workers must not run it again. Each run of it appends a line to the marker file.
UNGUARDED = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    with open(sys.argv[2], "a") as fh:
        fh.write("ran\\n")
    from knowledge_base import embedders
    from knowledge_base.builder import build
    embedders.WORKERS_FROM = 1
    report = build("lin", [sys.argv[3]], embedder="use")
    print(report.embedded)
""")


def test_the_workers_never_run_the_callers_own_script(tmp_path):
    script, marker = tmp_path / "page.py", tmp_path / "ran.txt"
    script.write_text(UNGUARDED, encoding="utf-8")
    book = write(tmp_path / "in" / "hong.txt", LONG)
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, str(script), root, str(marker), str(book)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, ZHIYIN_THREADS="2"))  # two workers on any machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) > 20
    assert marker.read_text().splitlines() == ["ran"]
