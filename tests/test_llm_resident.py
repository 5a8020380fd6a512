"""One chat model in memory (llm/resident.py) and the safety settings of the chat backends."""
from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

import llm
from llm import resident
from settings import Settings, load_settings
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

ASK = [HumanMessage("Who are you?")]


def _settings(model_dir: Path, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return load_settings(llm_backend="transformers", llm_model=str(model_dir), threads=2, max_tokens=3, **kw)


def test_changing_the_temperature_keeps_the_model_and_a_new_model_frees_the_old(
        tiny_qwen_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    resident.release()
    first = llm.get_chat_model(_settings(tiny_qwen_dir, temperature=0.0))
    first.invoke(ASK)
    loads = resident.loads
    _, weights = resident.get(resident.resident_key(), lambda: pytest.fail("must not reload"))
    old = weakref.ref(weights)
    del weights

    # Settings that do not decide the weights (temperature, top_p, max tokens) reuse them.
    warmer = llm.get_chat_model(_settings(tiny_qwen_dir, temperature=1.2, top_p=0.5))
    warmer.invoke(ASK, seed=1)
    assert resident.loads == loads

    # Another model: the first is freed, not kept beside it.
    other = shutil.copytree(tiny_qwen_dir, tmp_path / "other-qwen2")
    llm.get_chat_model(_settings(other)).invoke(ASK)
    assert resident.loads == loads + 1
    gc.collect()
    assert old() is None, "the previous model is still in memory"
    resident.release()


def test_trust_remote_code_is_off_by_default(tiny_qwen_dir: Path) -> None:  # noqa: F811
    assert Settings().trust_remote_code is False
    model = llm.get_chat_model(_settings(tiny_qwen_dir))
    assert model.trust_remote_code is False


def test_trust_remote_code_comes_only_from_settings_toml(
        tiny_qwen_dir: Path, zhiyin_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="settings.toml"):
        load_settings(trust_remote_code=True)  # a flag or the page's overrides
    with pytest.raises(ValueError, match="settings.toml"):
        llm.get_chat_model(_settings(tiny_qwen_dir), trust_remote_code=True)
    monkeypatch.setenv("ZHIYIN_TRUST_REMOTE_CODE", "1")
    with pytest.raises(ValueError, match="settings.toml"):
        load_settings()
    monkeypatch.delenv("ZHIYIN_TRUST_REMOTE_CODE")
    (zhiyin_home / "settings.toml").write_text("trust_remote_code = true\n", encoding="utf-8")
    assert llm.get_chat_model(_settings(tiny_qwen_dir)).trust_remote_code is True


def test_settings_repr_hides_the_secrets() -> None:
    shown = repr(Settings(openai_api_key="sk-very-secret", password="hunter2"))
    assert "sk-very-secret" not in shown and "hunter2" not in shown
    assert "llm_backend" in shown


def _rss_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


@pytest.mark.slow
def test_the_packaged_gguf_leaves_memory_when_another_model_loads(tiny_qwen_dir: Path) -> None:  # noqa: F811
    import settings as settings_mod

    gguf = settings_mod.find_checkpoint(llm.PACKAGED["qwen2.5-1.5b"].filename)
    if gguf is None:
        pytest.skip("the packaged 1.5B GGUF is not assembled (python -m llm prepare)")
    resident.release()
    base = _rss_mb()
    llm.get_chat_model(load_settings(llm_model=str(gguf), threads=2, max_tokens=2)).invoke(ASK)
    loaded = _rss_mb()
    assert loaded - base > 800  # llama.cpp holds the 1.1 GB of weights
    llm.get_chat_model(_settings(tiny_qwen_dir)).invoke(ASK)  # the page switches to another model
    assert _rss_mb() < loaded - 800, "the GGUF stayed in memory beside the new model"
    resident.release()
