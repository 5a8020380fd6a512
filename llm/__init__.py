"""Chat model backends behind one interface: each returns a LangChain chat model that streams.

``get_chat_model(settings)`` picks a backend by ``settings.llm_backend`` from :data:`BACKENDS`:

- ``llamacpp`` (default): a GGUF through llama.cpp (``xllamacpp``), in process, prefix cache on
  (llm/llamacpp.py). By default the packaged Qwen2.5-Coder-Instruct GGUF (llm/packaged.py).
- ``transformers``: a local Hugging Face folder plus an optional PEFT LoRA adapter (llm/hf.py).
- ``openai``: any OpenAI-compatible server (LMDeploy, vLLM, Ollama, llama.cpp's server).

Only one model's weights are in memory at a time (llm/resident.py). The registry and the
factories are in llm/backends.py; the CLI (``python -m llm prepare|chat``) in llm/cli.py.
"""
from llm.adapters import live as live_adapter
from llm.backends import BACKENDS, get_chat_model, model_label
from llm.cli import main
from llm.common import CHATML, ModelMissing
from llm.hf import HFSource, TransformersChat, mark_dequantised, resolve_adapter, resolve_hf_source
from llm.llamacpp import LlamaCppChat
from llm.packaged import (
    DEFAULT_MODEL,
    PACKAGED,
    SIZES,
    PackagedModel,
    assemble_parts,
    prepare_default_model,
    resolve_gguf,
    verified,
)

__all__ = [
    "BACKENDS", "CHATML", "DEFAULT_MODEL", "HFSource", "LlamaCppChat", "ModelMissing", "PACKAGED",
    "PackagedModel", "SIZES", "TransformersChat", "assemble_parts", "get_chat_model", "live_adapter", "main",
    "mark_dequantised", "model_label", "prepare_default_model", "resolve_adapter", "resolve_gguf",
    "resolve_hf_source", "verified",
]
