"""Where a character's LoRA adapters live: one folder per training run and a pointer to the live one.

    checkpoints/adapters/<character>/
        LIVE                    the name of the version served by `--adapter <character>`
        v-<time>-<pid>/         one run: adapter_config.json, adapter weights, manifest.json

Retraining writes a new version beside the old ones and then moves LIVE (an atomic rename), so
the previous adapter is never deleted and can be made live again (`python -m finetune live`).
A folder in the older flat layout (adapter_config.json directly inside) still loads.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from fileio import write_text_atomic

POINTER = "LIVE"
_VERSION = re.compile(r"v-\d+-\d+")  # v-<ms>-<pid>; a save's .tmp/.old siblings are not versions


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def versions(folder: Path) -> list[Path]:
    """The adapter versions in ``folder``, oldest first (names sort by creation time)."""
    if not folder.is_dir():
        return []
    found = [v for v in folder.glob("v-*") if _VERSION.fullmatch(v.name) and is_adapter(v)]
    return sorted(found, key=lambda v: (int(v.name.split("-")[1]), v.name))


def live(folder: Path) -> Path | None:
    """The adapter ``folder`` serves: its LIVE version, itself in the flat layout, else None."""
    pointer = folder / POINTER
    if pointer.is_file():
        version = folder / pointer.read_text(encoding="utf-8").strip()
        if version.parent == folder and is_adapter(version):
            return version
    if is_adapter(folder):
        return folder
    return None


def latest(folder: Path) -> Path | None:
    """The newest version (complete or interrupted), the one a resumed run continues."""
    found = versions(folder)
    return found[-1] if found else live(folder)


def new_version(folder: Path) -> Path:
    """A fresh, empty version folder name inside ``folder`` (not created)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"v-{int(time.time() * 1000)}-{os.getpid()}"


def set_live(folder: Path, version: Path) -> None:
    """Point LIVE at ``version`` (a folder inside ``folder``), atomically."""
    if version.parent != folder or not is_adapter(version):
        raise ValueError(f"{version} is not an adapter version of {folder}.")
    write_text_atomic(folder / POINTER, version.name)
