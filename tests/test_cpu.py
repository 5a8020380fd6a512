"""CPU-dependent choices (cpu.py): what the flags decide, the overrides, and that both llama.cpp weight
layouts load and answer alike."""
from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

import cpu
import llm
from llm import resident
from settings import load_settings


@pytest.fixture
def cpu_flags(monkeypatch: pytest.MonkeyPatch):
    """Set the flags the choices read (the real ones come from /proc/cpuinfo)."""
    monkeypatch.delenv("ZHIYIN_LLAMA_REPACK", raising=False)
    monkeypatch.delenv("ZHIYIN_EMBED_BF16", raising=False)

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(cpu, "flags", lambda: frozenset(names))

    return set_flags


def test_the_real_flags_are_read() -> None:
    found = cpu.flags()
    assert isinstance(found, frozenset)
    if Path("/proc/cpuinfo").exists():
        assert "fpu" in found or "fp" in found  # every x86 CPU has an FPU; ARM lists "fp"


def test_llama_repacks_only_where_avx512_exists(cpu_flags) -> None:
    cpu_flags("avx2", "fma")
    assert cpu.llama_repack() is False
    cpu_flags("avx2", "avx512f")
    assert cpu.llama_repack() is True


def test_bf16_only_where_the_cpu_computes_it(cpu_flags) -> None:
    cpu_flags("avx2", "avx512f")
    assert cpu.native_bf16() is False
    cpu_flags("avx512f", "avx512_bf16")
    assert cpu.native_bf16() is True
    cpu_flags("amx_bf16")
    assert cpu.native_bf16() is True


def test_the_environment_overrides_and_other_values_are_ignored(cpu_flags, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_flags("avx2")
    monkeypatch.setenv("ZHIYIN_LLAMA_REPACK", "1")
    assert cpu.llama_repack() is True
    cpu_flags("avx512f")
    monkeypatch.setenv("ZHIYIN_LLAMA_REPACK", "0")
    assert cpu.llama_repack() is False
    monkeypatch.setenv("ZHIYIN_LLAMA_REPACK", "yes")  # not 0/1: the CPU decides
    assert cpu.llama_repack() is True


@pytest.mark.slow
@pytest.mark.parametrize("repack", ["0", "1"])
def test_both_weight_layouts_load_and_answer(repack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        gguf = llm.prepare_default_model("0.5b", progress=False)
    except llm.ModelMissing as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("ZHIYIN_LLAMA_REPACK", repack)
    resident.release()  # the resident server was loaded with the other layout
    try:
        model = llm.get_chat_model(load_settings(llm_model=str(gguf), threads=2), temperature=0, max_tokens=4)
        reply = model.invoke([HumanMessage("What is 2 + 3? Reply with the number only.")])
        assert "5" in str(reply.content)
        assert resident.resident_key()[1] == str(gguf.resolve())  # loaded now, with this layout
    finally:
        resident.release()
