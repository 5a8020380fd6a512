"""Her voice, fine-tuned, one button away: the page starts ``python -m finetune voice <id>`` in the
background and reads how it goes from the log it writes.

    from finetune import job
    job.can_train()            # (False, "why") without a CUDA GPU: on CPU it stays the documented CLI
    job.start("daiyu")         # extract her lines from her texts, then train a LoRA (QLoRA with bitsandbytes)
    job.status("daiyu")        # {"running": True, "last": "train: 40%|...", "live": "v-...", ...}

One run per character at a time (the run holds an flock, locks.py; a record holds its process id); the
log and the run's record live beside her adapters, in ``checkpoints/adapters/<id>/``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import locks
from finetune.train import adapter_dir

LOG = "train.log"
RUN = "run.json"
LOCK = "train.lock"  # held by the running training process (locks.py)
REPO = Path(__file__).resolve().parent.parent
GPU_STEPS = 300  # on a GPU a few hundred steps take minutes; the CLI's default of 60 is for a CPU try


class JobError(RuntimeError):
    """A run cannot start (another is running, no texts); the message names the fix."""


def can_train() -> tuple[bool, str]:
    """(True, "") on a machine with a CUDA GPU; else (False, why), for the page to say."""
    try:
        import torch
    except ImportError:  # not installed: the install step puts it in
        return False, "torch is not installed; run the install command again."
    if not torch.cuda.is_available():
        return False, ("Training her voice needs a CUDA GPU; this machine has none. On a CPU it takes hours: "
                       "see docs/finetune.md for the command.")
    return True, ""


def _alive(pid: int) -> bool:
    try:  # our own child that ended is a zombie until reaped: reap it (the page's process started it)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:  # started by another process (an earlier page server): just look
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that id: not ours, but alive
        return True
    return True


def _run_record(character_id: str) -> dict[str, Any]:
    try:
        return json.loads((adapter_dir(character_id) / RUN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def running(character_id: str) -> bool:
    pid = _run_record(character_id).get("pid")
    return isinstance(pid, int) and _alive(pid)


def start(character_id: str, steps: int = GPU_STEPS, extra: list[str] | None = None) -> int:
    """Start her training in the background; its process id. Raises JobError when one is running."""
    from knowledge_base.builder import book_files

    busy = JobError("Her voice is already being trained; wait for that run to end.")
    if running(character_id):
        raise busy
    if not book_files(character_id):
        raise JobError("She has no book yet; add one on the Knowledge page first.")
    folder = adapter_dir(character_id)
    fd = locks.claim(folder / LOCK)  # two tabs clicking at once: one starts, the other is told
    if fd is None:
        raise busy
    try:
        if running(character_id):  # it started between the check above and the lock
            raise busy
        cmd = [sys.executable, "-m", "finetune", "voice", character_id, "--steps", str(steps), *(extra or [])]
        with (folder / LOG).open("w", encoding="utf-8") as log:
            # The run holds the lock for its life; a page reload or closed tab does not stop it.
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, pass_fds=(fd,))
    finally:
        os.close(fd)
    tmp = folder / (RUN + ".tmp")
    tmp.write_text(json.dumps({"pid": proc.pid, "started": time.time(), "command": cmd}), encoding="utf-8")
    tmp.replace(folder / RUN)
    return proc.pid


def status(character_id: str) -> dict[str, Any]:
    """How her training stands: running, the log's last line (tqdm's bar), the live adapter and its loss."""
    from llm import adapters

    folder = adapter_dir(character_id)
    record = _run_record(character_id)
    last = ""
    try:
        tail = (folder / LOG).read_text(encoding="utf-8", errors="replace")[-4000:]
        pieces = [p.strip() for p in re.split(r"[\r\n]+", tail) if p.strip()]
        last = pieces[-1] if pieces else ""
    except OSError:
        pass
    live = adapters.live(folder) if folder.is_dir() else None
    evals: dict[str, Any] = {}
    if live is not None and (live / "manifest.json").is_file():
        try:
            evals = json.loads((live / "manifest.json").read_text(encoding="utf-8")).get("eval", {})
        except ValueError:
            evals = {}
    return {"running": running(character_id), "started": record.get("started"), "last": last,
            "live": live.name if live else None, "eval": evals}
