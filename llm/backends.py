"""The registry of chat backends, chosen by ``settings.llm_backend``: each factory turns Settings
into a LangChain chat model that streams (the weights load on first use, one model at a time)."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from langchain_core.language_models import BaseChatModel

import settings as settings_mod
from llm.hf import TransformersChat, resolve_hf_source
from llm.llamacpp import LlamaCppChat
from llm.packaged import resolve_gguf
from registry import Registry
from settings import Settings

BACKENDS: Registry[BaseChatModel] = Registry("chat model backend")


def _sampling(settings: Settings) -> dict[str, Any]:
    """The generation settings every backend passes to its model."""
    return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens}


@BACKENDS.register("llamacpp")
def _llamacpp_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    return LlamaCppChat(
        model_path=str(resolve_gguf(settings.llm_model)),
        n_threads=settings.threads,
        **_sampling(settings),
        **extra,
    )


@BACKENDS.register("transformers")
def _transformers_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    extra.pop("n_ctx", None)
    return TransformersChat(
        source=resolve_hf_source(settings.llm_model, settings.llm_adapter),
        # A model folder's own Python code runs only when settings.toml says so (InternLM2 needs it).
        trust_remote_code=settings.trust_remote_code,
        n_threads=settings.threads,
        **_sampling(settings),
        **extra,
    )


@BACKENDS.register("openai")
def _openai_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    extra.pop("n_ctx", None)
    base_url = os.environ.get("OPENAI_BASE_URL") if not settings.openai_base_url else settings.openai_base_url
    # Local servers (llama.cpp, vLLM, LMDeploy, Ollama) ignore the key, but the client insists on one.
    key = settings.openai_api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return ChatOpenAI(
        base_url=base_url,
        api_key=key,
        model=settings.llm_model or "default",
        **_sampling(settings),
        streaming=True,
        stream_usage=True,
        max_retries=1,
        **extra,
    )


_SETTINGS_FIELDS = set(Settings.__dataclass_fields__)


def get_chat_model(settings: Settings | None = None, **overrides: Any) -> BaseChatModel:
    """The chat model of ``settings.llm_backend``; overrides are Settings fields or model fields (stop, seed, n_ctx)."""
    settings = settings or settings_mod.load_settings()
    for name in settings_mod.TOML_ONLY:
        if name in overrides:
            raise ValueError(f"{name} can be set only in settings.toml, not per call.")
    fields = {k: v for k, v in overrides.items() if k in _SETTINGS_FIELDS and v is not None}
    extra = {k: v for k, v in overrides.items() if k not in _SETTINGS_FIELDS and v is not None}
    if fields:
        settings = replace(settings, **fields)
    return BACKENDS.create(settings.llm_backend, settings=settings, **extra)


def model_label(chat_model: BaseChatModel) -> str:
    """A short "backend:model" name for logs and results, e.g. "llamacpp:qwen2.5-coder-1.5b-instruct-q4_k_m"."""
    label = getattr(chat_model, "label", None)
    if isinstance(label, str):
        return label
    name = getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or "?"
    kind = "openai" if type(chat_model).__name__ == "ChatOpenAI" else chat_model._llm_type
    return f"{kind}:{name}"
