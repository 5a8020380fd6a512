"""Knowledge stores keep to themselves: a book never silently replaces another of the same name,
each store tokenizes with its own names, and one background upgrade runs per character."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gen_chroma
from characters import texts_dir
from knowledge_base import keywords, upgrade
from knowledge_base.builder import build
from knowledge_base.store import KnowledgeStore, store_root
from ui import knowledge

BOOK_A = "第一回\n\n黛玉笑道：“这园子里的花开得正好。”宝玉听了，也笑了。\n\n紫鹃端了茶来，黛玉吃了一口。\n"
BOOK_B = "第一回\n\n宝钗在蘅芜苑里看书，莺儿在旁边打络子。\n\n宝钗笑道：“你这丫头倒巧。”\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- defect 6: a second upload with the same name ---------------------------------------------

def test_a_second_upload_with_the_same_name_is_kept_beside_the_first(tmp_path: Path) -> None:
    report, _ = knowledge.add_books("lin", [("book.txt", BOOK_A.encode())], name="林黛玉", lang="zh")
    assert report.added == ["book.txt"]
    report, _ = knowledge.add_books("lin", [("book.txt", BOOK_B.encode()), ("book.txt", BOOK_B.encode() + b"\n")])
    texts = texts_dir("lin")
    assert (texts / "book.txt").read_text(encoding="utf-8") == BOOK_A  # the first book is untouched
    assert sorted(p.name for p in texts.iterdir()) == ["book (2).txt", "book (3).txt", "book.txt"]
    assert [r["as"] for r in report.renamed] == ["book (2).txt", "book (3).txt"]
    assert report.files == 3
    # The same book uploaded again is recognised, not copied a fourth time.
    again, _ = knowledge.add_books("lin", [("book.txt", BOOK_A.encode())])
    assert again.renamed == [] and again.up_to_date


def test_replacing_on_purpose_keeps_the_old_book_recoverable(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    first = _write(tmp_path / "a" / "book.txt", BOOK_A)
    second = _write(tmp_path / "b" / "book.txt", BOOK_B)
    assert gen_chroma.main(["build", "lin", str(first), "--name", "林黛玉", "--no-upgrade", "--quiet"]) == 0
    assert gen_chroma.main(["build", "lin", str(second), "--replace", "--no-upgrade", "--quiet"]) == 0
    assert "old file is kept at" in capsys.readouterr().err
    texts = texts_dir("lin")
    assert (texts / "book.txt").read_text(encoding="utf-8") == BOOK_B
    kept = list((texts / ".replaced").iterdir())
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == BOOK_A
    store = KnowledgeStore.open("lin")
    assert store.stats()["files"] == 1  # the kept copy is not read into the store
    assert not any("紫鹃" in c["text"] for c in store.chunks)


# ---- defect 11: one tokenizer state per store -------------------------------------------------

def test_a_stores_query_tokens_do_not_depend_on_other_stores_opened_before(tmp_path: Path) -> None:
    build("lin", [_write(tmp_path / "a.txt", BOOK_A)], name="林黛玉", lang="zh")
    build("odd", [_write(tmp_path / "b.txt", BOOK_B)], name="开得正", lang="zh")  # a name that glues words
    question = "黛玉笑道什么花开得正好"
    lin = KnowledgeStore.open("lin")
    before = (lin.tokenize(question), [h.matched for h in lin.search(question, k=3)])
    odd = KnowledgeStore.open("odd")
    assert "开得正" in odd.tokenize(question)  # the other store keeps its own name whole
    after = (lin.tokenize(question), [h.matched for h in lin.search(question, k=3)])
    assert before == after
    assert "开得正" not in after[0] and "花开" in after[0]  # a shared dictionary would have cut 花|开得正|好
    assert lin.tokenize is not odd.tokenize and keywords.tokenize(question) == keywords.tokenize(question)


# ---- defect 13: one background upgrade per character ------------------------------------------

STAND_IN = "import time; time.sleep(60)"  # stands in for the e5 upgrade: it only has to hold the inherited lock


@pytest.fixture
def slow_upgrade(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    started: list[int] = []
    real_popen = subprocess.Popen

    def popen(argv, *a, **k):  # type: ignore[no-untyped-def]
        proc = real_popen(argv, *a, **k)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(gen_chroma, "upgrade_argv", lambda cid: [sys.executable, "-c", STAND_IN, "upgrade"])
    monkeypatch.setattr(gen_chroma.subprocess, "Popen", popen)
    yield started
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_clicking_upgrade_twice_starts_one_process(slow_upgrade, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build("lin", [_write(tmp_path / "a.txt", BOOK_A)], name="林黛玉", lang="zh")
    first = gen_chroma.start_background_upgrade("lin")
    second = gen_chroma.start_background_upgrade("lin")
    assert second == first and slow_upgrade == [first]
    assert upgrade.running("lin") == first
    # Run by hand meanwhile, the upgrade command refuses instead of starting a second embedder.
    res = subprocess.run([sys.executable, "gen_chroma.py", "upgrade", "lin", "--quiet"], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert res.returncode == 2 and "already running" in res.stderr and "Traceback" not in res.stderr


def test_a_stale_pid_is_detected_and_a_new_upgrade_may_start(slow_upgrade, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build("lin", [_write(tmp_path / "a.txt", BOOK_A)], name="林黛玉", lang="zh")
    first = gen_chroma.start_background_upgrade("lin")
    os.kill(first, signal.SIGKILL)  # the upgrade dies without cleaning up: its pid file stays
    os.waitpid(first, 0)
    assert json.loads((store_root("lin") / upgrade.PID_FILE).read_text())["pid"] == first
    assert upgrade.running("lin") is None  # stale: the process is gone
    deadline = time.monotonic() + 5
    while (fd := upgrade.claim("lin")) is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel drops a dead process's lock at once; allow for slow reaping
    assert fd is not None
    os.close(fd)
    again = gen_chroma.start_background_upgrade("lin")
    assert again != first and slow_upgrade == [first, again]
