"""Shared fixtures: every test gets its own ZHIYIN_HOME so nothing touches the repo."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def zhiyin_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ZHIYIN_HOME per test; bundled characters stay visible read-only."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ZHIYIN_HOME", str(home))
    # Shared, read-only model assets (assembled GGUF, whisper) are found through this.
    monkeypatch.setenv("ZHIYIN_MODELS", str(REPO / "checkpoints"))
    return home


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return CORPUS


@pytest.fixture
def no_gemma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A machine where EmbeddingGemma is not assembled (neither in the models dir nor in the repo's
    checkpoints/, where install.sh puts it): the models dir it would be assembled into."""
    from knowledge_base import gemma
    from knowledge_base.embedders import get_embedder

    models = tmp_path / "no-models"
    monkeypatch.setenv("ZHIYIN_MODELS", str(models))
    monkeypatch.setattr(gemma, "fallback_dirs", lambda: [])
    get_embedder.cache_clear()
    yield models
    get_embedder.cache_clear()
