"""The base model a LoRA adapter is trained on: a packaged GGUF (dequantised), a .gguf file or a
Hugging Face folder, loaded for training (QLoRA only with CUDA and bitsandbytes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import settings
from llm.common import CHATML  # the template the transformers backend serves with


class TrainError(RuntimeError):
    """A training run that cannot start; the message says what to fix."""


@dataclass
class Base:
    """A base model on disk: a Hugging Face folder, or a GGUF file in a folder."""

    folder: Path
    gguf_file: str | None
    label: str  # what llm.py's transformers backend resolves: a packaged name or a path

    @property
    def path(self) -> Path:
        return self.folder / self.gguf_file if self.gguf_file else self.folder


def resolve_base(name: str = "") -> Base:
    """Turn --base ('' = packaged Qwen2.5-Coder-0.5B, a size, a .gguf file, an HF folder) into a Base."""
    if not name or name in {"0.5b", "1.5b", "qwen2.5-0.5b", "qwen2.5-1.5b"}:
        import llm

        size = {"": "0.5b", "qwen2.5-0.5b": "0.5b", "qwen2.5-1.5b": "1.5b"}.get(name, name)
        try:
            path = llm.prepare_default_model(size)
        except llm.ModelMissing as exc:
            raise TrainError(str(exc)) from None
        # The packaged name (not a path) so llm.py finds the same base on any machine.
        return Base(path.parent, path.name, f"qwen2.5-{size}")
    path = Path(name).expanduser()
    if not path.exists():
        path = settings.find_checkpoint(name) or path
    if path.is_file() and path.suffix == ".gguf":
        return Base(path.parent, path.name, str(path))
    if path.is_dir() and (path / "config.json").is_file():
        return Base(path, None, str(path))
    raise TrainError(f"No base model at '{name}': give a Hugging Face model folder or a .gguf file with --base.")


def load_base(base: Base, quantize_4bit: bool | None = None) -> tuple[Any, Any, str]:
    """Load tokenizer and model for training; QLoRA (4-bit) only with CUDA and bitsandbytes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    if quantize_4bit is None:
        quantize_4bit = cuda and _has("bitsandbytes") and base.gguf_file is None
    kwargs: dict[str, Any] = {"gguf_file": base.gguf_file} if base.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(base.folder, **kwargs)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        mode = "qlora-4bit"
    else:
        kwargs["dtype"] = torch.bfloat16 if cuda else torch.float32
        mode = "lora-bf16" if cuda else "lora-fp32"
    model = AutoModelForCausalLM.from_pretrained(base.folder, **kwargs)
    if base.gguf_file:
        from llm import mark_dequantised

        mark_dequantised(model)
    if quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    elif cuda:
        model = model.to("cuda")
    return tokenizer, model, mode


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
