"""EmbeddingGemma's transformer exported once to ONNX, for ONNX Runtime on CPUs without native bf16.

There, torch runs the model in fp32; ONNX Runtime computes the same vectors (cosine 1.0000 to torch's)
2.6x faster per question and 1.24x faster per passage on 2 cores (bench/gemma_runtime.py, session 19).
The export needs torch's dynamo exporter (``onnxscript``) and ~2.5 minutes; it writes
``<model folder>/onnx/`` (model.onnx + its 1.2 GB of weights) and a marker naming the weights it came from,
so a re-assembled model is exported again. Only the transformer is exported: pooling and the dense layers
after it stay in sentence-transformers' own modules (embedders.OnnxEmbedder).

    python -m knowledge_base.gemma prepare    # assembles the model, then exports it (once)
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

SUBDIR = "onnx"
MODEL = "model.onnx"
DONE = ".complete"  # written last; holds the signature of the weights it was exported from
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "token_embeddings"
# The export traces on a small padded batch; the check then runs a longer one than the tracing saw.
_CHECK_TEXTS = ("title: none | text: 黛玉自在枕上感念宝钗……又听见窗外竹梢焦叶之上，雨声淅沥，清寒透幕。" * 3,
                "task: question answering | query: What did Elizabeth think of Mr. Collins?")


class OnnxExportError(RuntimeError):
    """The export failed or its vectors differ from torch's; the message names the fix."""


def signature(folder: Path) -> str:
    """What the export is tied to: the weights file's size and modification time (the assembly replaces
    the whole folder, so a new model has a new time)."""
    st = (folder / "model.safetensors").stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def exported(folder: Path) -> Path | None:
    """The exported model.onnx of ``folder``'s current weights, or None."""
    onnx_dir = folder / SUBDIR
    try:
        done = (onnx_dir / DONE).read_text(encoding="utf-8").strip()
        return onnx_dir / MODEL if done == signature(folder) and (onnx_dir / MODEL).is_file() else None
    except OSError:
        return None


def export(folder: Path, quiet: bool = False) -> Path:
    """Export ``folder``'s transformer (a sentence-transformers folder) to ``folder/onnx`` unless done."""
    done = exported(folder)
    if done is not None:
        return done
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it; the message below names it)
    except ImportError as exc:
        raise OnnxExportError("The ONNX export needs onnxscript: run `bash scripts/install.sh` (it installs the "
                              "locked requirements), or set ZHIYIN_EMBED_ONNX=0 to embed with torch.") from exc
    import torch
    from transformers import AutoModel

    work = folder / f".{SUBDIR}.{os.getpid()}.part"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    steps = tqdm(total=4, desc="EmbeddingGemma → ONNX", unit="step", file=sys.stderr, disable=quiet)
    try:
        # Eager attention: the exported graph is the one the torch path runs (sdpa's masks trace differently).
        steps.set_postfix_str("loading")
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32).eval()
        steps.update()
        steps.set_postfix_str("tracing (~3 min on 2 cores)")

        class Tokens(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        ids = torch.randint(10, 1000, (2, 17))
        mask = torch.ones_like(ids)
        mask[1, 12:] = 0  # a padded row, so the mask path is traced as the batches use it
        batch, seq = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("seq", min=2, max=8192)
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its "torchvision is not installed" lines
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Tokens(model), (ids, mask), dynamo=True, verbose=False, optimize=True,
                                        input_names=list(INPUTS), output_names=[OUTPUT],
                                        dynamic_shapes={n: {0: batch, 1: seq} for n in INPUTS})
        steps.update()
        steps.set_postfix_str("writing 1.2 GB")
        program.save(str(work / MODEL), external_data=True)
        del program
        steps.update()
        steps.set_postfix_str("checking against torch")
        _check(model, folder, work / MODEL)
        steps.update()
        (work / DONE).write_text(signature(folder), encoding="utf-8")
        shutil.rmtree(folder / SUBDIR, ignore_errors=True)
        os.replace(work, folder / SUBDIR)  # appears whole or not at all
    except OnnxExportError:
        raise
    except Exception as exc:  # the exporter's failures are many and internal; one line names the way out
        raise OnnxExportError(f"Exporting {folder.name} to ONNX failed ({type(exc).__name__}: {exc}); search "
                              "embeds with torch meanwhile. Set ZHIYIN_EMBED_ONNX=0 to stop trying.") from exc
    finally:
        steps.close()
        shutil.rmtree(work, ignore_errors=True)
    return folder / SUBDIR / MODEL


def _check(model: object, folder: Path, path: Path) -> None:
    """Token vectors of ONNX Runtime against torch's on a padded batch longer than the traced one."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(list(_CHECK_TEXTS), padding=True, return_tensors="np")
    got = session(path, threads=None).run([OUTPUT], {n: enc[n].astype(np.int64) for n in INPUTS})[0]
    with torch.inference_mode():
        want = model(input_ids=torch.from_numpy(enc["input_ids"]),  # type: ignore[operator]
                     attention_mask=torch.from_numpy(enc["attention_mask"])).last_hidden_state.numpy()
    real = enc["attention_mask"].astype(bool)
    a, b = got[real], want[real]
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    if float(cos.min()) < 0.9999:
        raise OnnxExportError(f"The ONNX export of {folder.name} computes other vectors than torch (token cosine "
                              f"{float(cos.min()):.4f}); it was not kept, and search embeds with torch.")


def session(path: Path, threads: int | None):
    """An ONNX Runtime session on the CPU with ``threads`` threads for each operator (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Its threads would otherwise spin after each run, taking the 2 cores from the search's own numpy
    # work and from the chat model reading its prompt right after.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
