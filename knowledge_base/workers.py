"""Worker processes that share a long CPU-bound job out: one object per process, each single-threaded.

Why: USE's numpy graph multiplies small matrices (a few hundred tokens at a time), which two BLAS threads
speed up only ~1.2-1.4x on 2 cores; two single-threaded processes, each embedding half of every batch,
use both cores fully and leave the parent's own thread free for the keyword index meanwhile
(docs/knowledge_base.md, "The first index", session 20). Processes are spawned, not forked: the page's
threads and locks must not be copied into a child.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

_held: Any = None  # in a worker: the object its initializer made


def _start(make: Callable[[], Any]) -> None:
    global _held
    # A worker whose parent was killed (SIGKILL, a crash) would wait for work forever, holding ~400 MB:
    # it ends with its parent instead.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    _held = make()


def _ready() -> None:
    pass


def _call(method: str, items: list) -> Any:
    return getattr(_held, method)(items)


class Workers:
    """``n`` processes each holding ``make()``; ``map(method, items)`` splits ``items`` into ``n`` parts
    in order, calls ``method`` on one part in each process and returns their results in order."""

    def __init__(self, make: Callable[[], Any], n: int) -> None:
        self.n = n
        self._pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(make,))

    def map(self, method: str, items: list) -> list:
        size = -(-len(items) // self.n)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        return list(self._pool.map(_call, [method] * len(parts), parts))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def started(make: Callable[[], Any], n: int) -> Iterator[Workers | None]:
    """``n`` workers for the length of the block; None (the caller works alone) where fewer than two are
    asked for or processes cannot be started here (a warning on stderr says so)."""
    pool = None
    if n >= 2:
        try:
            pool = Workers(make, n)
        except (OSError, ValueError) as exc:  # no /dev/shm, a process limit, ...
            print(f"warning: could not start {n} worker processes ({exc}); working in one", file=sys.stderr)
    try:
        yield pool
    finally:
        if pool is not None:
            pool.close()
