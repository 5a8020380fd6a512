"""One process at a time for a piece of background work (a character's index upgrade, her voice's
training), across processes and browser tabs: an flock taken without waiting and held by the process
doing the work. The kernel drops it when that process dies, so a crash never leaves the work locked;
a check-then-start without it let two tabs clicking at once both start."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


def claim(path: Path) -> int | None:
    """Take the lock at ``path`` without waiting: the open descriptor that holds it, or None when another
    process holds it. Keep the descriptor open for the work's life, or pass it to the child doing it
    (``subprocess.Popen(..., pass_fds=(fd,))``) and close it here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
