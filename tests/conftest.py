"""Shared fixtures: every test gets its own ZHIYIN_HOME so nothing touches the repo."""
from __future__ import annotations

import sys
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
