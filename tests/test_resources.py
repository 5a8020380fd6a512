"""ui/resources.py: who may change settings and books, and one chat model shared by every settings."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config as st_config

from llm import resident
from settings import load_settings
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)
from ui import resources


@pytest.fixture
def address():  # type: ignore[no-untyped-def]
    """Set Streamlit's server.address for one test, as `streamlit run --server.address X` does."""
    before = st_config.get_option("server.address")

    def set_to(value: str | None) -> None:
        st_config.set_option("server.address", value)

    yield set_to
    st_config.set_option("server.address", before)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.1.1"])
def test_a_page_on_this_machine_may_edit(address, host: str) -> None:  # type: ignore[no-untyped-def]
    address(host)
    assert resources.editing_allowed() == (True, "")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.org", None])
def test_a_page_served_further_without_a_password_is_read_only(address, host, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ZHIYIN_PASSWORD", raising=False)
    address(host)
    allowed, why = resources.editing_allowed()
    assert not allowed
    assert "read-only" in why and "ZHIYIN_PASSWORD" in why


def test_with_a_password_editing_needs_it(address, monkeypatch, zhiyin_home: Path) -> None:  # type: ignore[no-untyped-def]
    address("0.0.0.0")
    monkeypatch.setenv("ZHIYIN_PASSWORD", "open sesame")
    assert resources.editing_allowed() == (False, "Enter the password to change settings or books.")
    assert resources.editing_allowed("wrong")[0] is False
    assert resources.editing_allowed("open sesame") == (True, "")
    monkeypatch.delenv("ZHIYIN_PASSWORD")
    (zhiyin_home / "settings.toml").write_text('password = "from toml"\n', encoding="utf-8")
    assert resources.editing_allowed("from toml") == (True, "")


def test_chat_models_for_two_temperatures_share_one_loaded_model(tiny_qwen_dir: Path) -> None:  # noqa: F811
    resident.release()
    base = dict(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2, max_tokens=2)
    cool = resources.chat_model(load_settings(temperature=0.1, **base))
    warm = resources.chat_model(load_settings(temperature=1.0, **base))
    cool.invoke("hello")
    loads = resident.loads
    warm.invoke("hello", seed=0)
    assert resident.loads == loads  # a new temperature did not load the model again
    resident.release()
