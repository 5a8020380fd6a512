"""Worker processes that share a long CPU-bound job out: one object per process, each single-threaded.

Why: USE's numpy graph multiplies small matrices (a few hundred tokens at a time), which two BLAS threads
speed up only ~1.2-1.4x on 2 cores; two single-threaded processes, each embedding half of every batch,
use both cores fully and leave the parent's own thread free for the keyword index meanwhile
(docs/knowledge_base.md, "Session 20"). Each worker is ``python -m knowledge_base.workers MODULE:FUNCTION``
talking pickles over its stdin and stdout, not a multiprocessing pool: multiprocessing's children import the
parent's ``__main__`` first, and under Streamlit that is the page script itself, which then ran again in
every worker and hung the build. A worker ends when its stdin closes: when the build is done, and when its
parent dies.
"""
from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the repository: what ``-m knowledge_base.workers`` imports from


class WorkerError(RuntimeError):
    """A worker died, could not start, or failed on its part."""


class Workers:
    """``n`` processes each holding ``make()`` (a "module:function" path); ``map(method, items)`` splits
    ``items`` into ``n`` parts in order, calls ``method`` on one part in each process and returns the results
    in order."""

    def __init__(self, make: str, n: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self._procs = [subprocess.Popen([sys.executable, "-m", "knowledge_base.workers", make],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) for _ in range(n)]

    @property
    def n(self) -> int:
        return len(self._procs)

    def map(self, method: str, items: list) -> list:
        size = -(-len(items) // self.n)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        busy = self._procs[: len(parts)]
        try:
            for proc, part in zip(busy, parts, strict=True):  # all parts out first, so the workers run together
                pickle.dump((method, part), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
            answers = [pickle.load(proc.stdout) for proc in busy]
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise WorkerError(f"a worker process ended ({type(exc).__name__})") from exc
        for ok, value in answers:
            if not ok:
                raise WorkerError(value)
        return [value for _, value in answers]

    def close(self) -> None:
        for proc in self._procs:
            # Its read ends, so it exits; an answer it is still writing (an interrupted build) meets a closed pipe.
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def started(make: str, n: int) -> Iterator[Workers | None]:
    """``n`` workers for the length of the block; None (the caller works alone) where fewer than two are
    asked for or processes cannot be started here (a warning on stderr says so)."""
    pool = None
    if n >= 2:
        try:
            pool = Workers(make, n)
        except OSError as exc:  # a process limit, no executable, ...
            print(f"warning: could not start {n} worker processes ({exc}); working in one", file=sys.stderr)
    try:
        yield pool
    finally:
        if pool is not None:
            pool.close()


def serve(make: str) -> None:
    """A worker's life: make the object, then answer (method, items) pickles until stdin closes."""
    module, name = make.split(":")
    held: Any = getattr(importlib.import_module(module), name)()
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    while True:
        try:
            method, items = pickle.load(inp)
        except EOFError:
            return
        try:
            answer = (True, getattr(held, method)(items))
        except Exception as exc:  # reported to the parent, which falls back to working alone
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except BrokenPipeError:  # the parent is gone
            return


if __name__ == "__main__":
    serve(sys.argv[1])
