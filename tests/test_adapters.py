"""LoRA adapters are versioned: retraining keeps the previous one, a pointer names the live one,
and an interrupted run's state is read as plain tensors (never a pickle that runs code)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llm
from finetune.train import STATE, TrainConfig, TrainError, adapter_dir, train
from llm import adapters
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

REPO = Path(__file__).resolve().parent.parent


def _dataset(path: Path, n: int = 6) -> Path:
    recs = [{"messages": [{"role": "system", "content": "You are Lin Daiyu."},
                          {"role": "user", "content": f"Hello {i}?"},
                          {"role": "assistant", "content": f"I am Lin Daiyu {i}."}]} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    return path


def test_retraining_keeps_the_previous_adapter_and_moves_the_live_pointer(
        tmp_path: Path, tiny_qwen_dir: Path) -> None:  # noqa: F811
    data = _dataset(tmp_path / "d.jsonl")
    first = train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=1), progress=False).adapter
    assert llm.resolve_adapter("daiyu") == first
    second = train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=1, seed=1), progress=False).adapter
    assert first != second and (first / "adapter_config.json").is_file()  # the old adapter is still there
    assert adapters.versions(adapter_dir("daiyu")) == [first, second]
    assert llm.resolve_adapter("daiyu") == second  # `--adapter daiyu` serves the newest complete run

    # An interrupted retraining does not replace the live, complete adapter.
    def interrupt(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=3), on_step=interrupt, progress=False)
    assert llm.resolve_adapter("daiyu") == second

    # The CLI lists the versions and can make the first one live again.
    res = subprocess.run([sys.executable, "-m", "finetune", "adapters", "daiyu", "--live", first.name, "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)
    assert listed["live"] == first.name and len(listed["versions"]) == 3
    assert [v["status"] for v in listed["versions"]] == ["complete", "complete", "interrupted"]
    assert llm.resolve_adapter("daiyu") == first


def test_the_older_flat_adapter_folder_still_loads(tmp_path: Path) -> None:
    flat = tmp_path / "adapters" / "daiyu"
    flat.mkdir(parents=True)
    (flat / "adapter_config.json").write_text("{}", encoding="utf-8")
    assert adapters.live(flat) == flat


class _RunsCode:
    """A pickle payload that would create a file when unpickled (what a booby-trapped checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path: Path, tiny_qwen_dir: Path) -> None:  # noqa: F811
    data = _dataset(tmp_path / "d.jsonl")

    def interrupt(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=2), on_step=interrupt, progress=False)
    saved = adapters.latest(adapter_dir("daiyu"))
    marker = tmp_path / "pwned"
    torch.save({"optimizer": {}, "step": 1, "curve": [], "x": _RunsCode(marker)}, saved / STATE)
    with pytest.raises(TrainError, match="not a plain training checkpoint"):
        train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=2), resume=True, progress=False)
    assert not marker.exists()
