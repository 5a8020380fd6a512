"""What this CPU computes natively, for the choices that depend on it (EmbeddingGemma's dtype, llama.cpp's
weight layout). Each choice has an environment override, for CPUs these rules guess wrong on."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def choice(env: str, default: bool) -> bool:
    """``default``, unless the environment variable ``env`` is "0" or "1"."""
    forced = os.environ.get(env)
    return forced == "1" if forced in ("0", "1") else default


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); ZHIYIN_EMBED_BF16=0/1 overrides."""
    return choice("ZHIYIN_EMBED_BF16", bool(flags() & {"avx512_bf16", "amx_bf16"}))


def embed_onnx() -> bool:
    """Whether EmbeddingGemma runs in ONNX Runtime (where exported) rather than torch. Chosen where the CPU lacks
    native bf16: there torch runs fp32, and ONNX Runtime computed the same vectors 2.6x faster per question,
    1.24x per passage (bench/gemma_runtime.py, session 19, AMD EPYC with AVX2). Where bf16 is native, torch's bf16 stays: ONNX Runtime
    was not measured on such a CPU. ZHIYIN_EMBED_ONNX=0/1 overrides."""
    return choice("ZHIYIN_EMBED_ONNX", not native_bf16())


def llama_repack() -> bool:
    """Whether llama.cpp repacks the model's weights for its CPU matrix kernels (its default). On an AVX2 CPU
    without AVX-512 (session 15's AMD EPYC) prompts were read faster without: 47-50 against 39-41 tokens/s
    (bench/llama_layout.py, docs/llm.md). Kept where AVX-512 exists, the CPU our earlier figures came from, which we cannot re-measure.
    ZHIYIN_LLAMA_REPACK=0/1 overrides."""
    return choice("ZHIYIN_LLAMA_REPACK", "avx512f" in flags())
