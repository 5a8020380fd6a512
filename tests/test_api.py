"""api/: a real server process (python api.py) on a loopback port, driven by the official `openai` client.

The server runs the tiny random Qwen2 (tests/tiny_model.py, transformers backend) over a small real
store built here with USE; its words are noise, so these tests check what the API sends, counts,
streams, serialises and refuses, not what she says. Speech and transcription use the packaged offline
voices and Whisper base. One in-process test reads what the chat model is actually sent. The API in
front of llama.cpp's own server, and the stores on a Chroma server: tests/test_scale_out.py.
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import REPO
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

KEY = "test-key-7c1f"
BOOK = """Chapter 1

Elizabeth walked three miles across the muddy fields to Netherfield, because her sister Jane had
fallen ill there, and she arrived with her petticoat six inches deep in mud.

Chapter 2

Elizabeth kept a grey kitten named Pemberley-Puss at Longbourn, a gift from her aunt Gardiner, and
taught it to sit on the third stair of the staircase while she read.
"""
KITTEN = "What was the name of your grey kitten?"
LIMITS = {"ZHIYIN_API_MAX_MESSAGES": "16", "ZHIYIN_API_MAX_BODY_BYTES": "100000",
          "ZHIYIN_API_MAX_UPLOAD_BYTES": "600000", "ZHIYIN_API_CONTEXT_TOKENS": "6000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not start in {timeout} s:\n{log.read_text()[-3000:]}")


def start_api(env: dict[str, str], log: Path, host: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "api.py"), "--host", host, "--port", str(port)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with Elizabeth's store built from the short book above (daiyu has none: not ready)."""
    from knowledge_base.builder import build

    home = tmp_path_factory.mktemp("api-home")
    book = home / "in" / "longbourn.txt"
    book.parent.mkdir()
    book.write_text(BOOK, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZHIYIN_HOME", str(home))
        build("elizabeth", [book], embedder="use")
    return home


def server_env(home: Path, tiny: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIYIN_")}
    return env | {"ZHIYIN_HOME": str(home), "ZHIYIN_MODELS": str(REPO / "checkpoints"),
                  "ZHIYIN_LLM_BACKEND": "transformers", "ZHIYIN_LLM_MODEL": str(tiny), "ZHIYIN_THREADS": "1",
                  "ZHIYIN_MAX_TOKENS": "8", "ZHIYIN_TTS_ENGINE": "auto", "PYTHONUNBUFFERED": "1"} | extra


@pytest.fixture(scope="module")
def server(home: Path, tiny_qwen_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """`python api.py` with a key, small limits and the tiny model; yields (base url, log path)."""
    log = tmp_path_factory.mktemp("api-log") / "server.log"
    proc, url = start_api(server_env(home, tiny_qwen_dir, ZHIYIN_API_KEY=KEY, **LIMITS), log)
    yield url, log
    stop(proc)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def log_line(log: Path, rid: str, timeout: float = 10) -> str:
    """The server's log line for one turn (written when its worker finishes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log.read_text().splitlines() if f"turn id={rid} " in line]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no log line for {rid}")


# --------------------------------------------------------------------------- models
def test_models_list_every_character_and_mode_with_her_name(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"elizabeth", "elizabeth:roleplay", "daiyu", "daiyu:roleplay"} <= set(models)
    assert models["elizabeth:roleplay"].model_extra["name"] == "Elizabeth Bennet"
    assert models["daiyu"].model_extra["name"] == "林黛玉" and models["daiyu"].model_extra["mode"] == "reader"
    assert models["elizabeth"].model_extra["ready"] is True and models["daiyu"].model_extra["ready"] is False
    assert client.models.retrieve("elizabeth:roleplay").id == "elizabeth:roleplay"


# ----------------------------------------------------------------------------- chat
def test_an_answer_with_her_sources_usage_and_the_token_cap(client: openai.OpenAI, server) -> None:
    resp = client.chat.completions.create(model="elizabeth", messages=[{"role": "user", "content": KITTEN}],
                                          max_tokens=5, user="reader-42")
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == "elizabeth" and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason == "length"  # the random model never stops by itself
    assert resp.usage.completion_tokens == 5 and resp.usage.prompt_tokens > 100
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 5
    sources = resp.model_extra["sources"]
    assert any("Pemberley-Puss" in s["passage"] for s in sources)
    assert {"n", "passage", "source", "chapter", "matched", "score"} <= set(sources[0])
    assert resp.model_extra["zhiyin"]["first_token_ms"] > 0
    assert "user=reader-42 " in log_line(server[1], resp.id)


def test_streaming_sends_real_deltas_then_usage_and_matches_the_whole_answer(client: openai.OpenAI) -> None:
    ask = {"model": "elizabeth", "messages": [{"role": "user", "content": KITTEN}], "temperature": 0, "max_tokens": 40}
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["sources"]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, "the answer must arrive in pieces, not at once"
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].model_extra["zhiyin"]["total_ms"] > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40
    whole = client.chat.completions.create(**ask)  # greedy: the same pipeline gives the same answer
    assert "".join(pieces).strip() == whole.choices[0].message.content


def test_stream_is_sse_ending_with_done(server) -> None:
    body = {"model": "elizabeth:roleplay", "messages": [{"role": "user", "content": "Good morning."}], "stream": True}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk" and "usage" not in first  # only with include_usage
    assert json.loads(lines[1][6:])["choices"][0]["delta"] == {"content": "I"}  # role-play's given start


def test_the_messages_become_her_conversation(home: Path, tiny_qwen_dir: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (the app on Starlette's TestClient) to read what the chat model is sent."""
    from fastapi.testclient import TestClient
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    import llm
    from api.server import create_app, make_service
    from settings import load_settings

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.calls: list = []
            self.params: list = []

        def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
            self.calls.append(list(messages[0]))
            self.params.append(kwargs.get("invocation_params") or {})

    monkeypatch.setenv("ZHIYIN_HOME", str(home))
    rec = Recorder()
    settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=1, max_tokens=4)
    app = create_app(make_service(settings, llm=llm.get_chat_model(settings, callbacks=[rec])))
    messages = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "assistant", "content": "Good day to you."},  # her greeting, before any question
        {"role": "user", "content": "Where did you walk?"},
        {"role": "assistant", "content": "To Netherfield."},
        {"role": "user", "content": [{"type": "text", "text": KITTEN}]},
    ]
    with TestClient(app) as http:
        resp = http.post("/v1/chat/completions", json={
            "model": "elizabeth:roleplay", "messages": messages, "temperature": 0.3, "top_p": 0.5,
            "max_tokens": 3, "stop": ["zzz"], "seed": 7})
    assert resp.status_code == 200, resp.text
    sent, params = rec.calls[0], rec.params[0]  # the first try (the persona guard may generate again, seed + 1)
    system = sent[0].content
    assert isinstance(sent[0], SystemMessage) and "Answer in one sentence." in system
    assert system.index("Elizabeth") < system.index("Answer in one sentence.")  # her card first, then the client's
    # Her card's example exchanges open the conversation (role-play), then the client's turns.
    k = next(i for i, m in enumerate(sent) if m.content == "Good day to you.") - 1
    assert k > 1 and [type(m) for m in sent[1:3]] == [HumanMessage, AIMessage]
    assert [type(m) for m in sent[k:k + 4]] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert [m.content for m in sent[k:k + 4]] == ["", "Good day to you.", "Where did you walk?", "To Netherfield."]
    assert isinstance(sent[k + 4], HumanMessage) and KITTEN in sent[k + 4].content and "Pemberley-Puss" in sent[k + 4].content
    assert (params["temperature"], params["top_p"], params["max_tokens"], params["seed"]) == (0.3, 0.5, 3, 7)
    assert "zzz" in params["stop"] and "[Visitor" in params["stop"]  # the client's, and where her role-play ends


# ---------------------------------------------------------------- two clients at once
def test_two_clients_at_once_are_served_one_after_the_other(server) -> None:
    results: dict[int, dict] = {}

    def ask(n: int) -> None:
        c = openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)
        times, text, extra = [], [], {}
        for chunk in c.chat.completions.create(model="elizabeth", messages=[{"role": "user", "content": KITTEN}],
                                               max_tokens=300, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.monotonic())
                text.append(chunk.choices[0].delta.content)
            extra |= chunk.model_extra.get("zhiyin") or {}
        results[n] = {"first": times[0], "last": times[-1], "text": "".join(text), "zhiyin": extra}

    threads = [threading.Thread(target=ask, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert set(results) == {1, 2} and all(r["text"] for r in results.values()), "both must be answered"
    a, b = sorted(results.values(), key=lambda r: r["first"])
    assert b["first"] >= a["last"], "generation is serialised: the second starts after the first ends"
    assert b["zhiyin"]["queued_ms"] > 0 and b["zhiyin"]["queued_ms"] >= a["zhiyin"]["queued_ms"]


def test_a_client_that_hangs_up_stops_the_generation(client: openai.OpenAI, server) -> None:
    stream = client.chat.completions.create(model="elizabeth", messages=[{"role": "user", "content": KITTEN}],
                                            max_tokens=4000, stream=True)
    rid = None
    for chunk in stream:
        rid = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    line = log_line(server[1], rid, timeout=30)
    assert "outcome=cancelled" in line
    assert int(re.search(r"pieces=(\d+)", line).group(1)) < 400  # not the 4000 tokens asked for
    after = client.chat.completions.create(model="elizabeth", messages=[{"role": "user", "content": KITTEN}])
    assert after.model_extra["zhiyin"]["queued_ms"] < 1000, "the next request is served at once"


# ------------------------------------------------------------------------ bad requests
def _chat(**body):
    return lambda c: c.chat.completions.create(**({"model": "elizabeth", "messages": [
        {"role": "user", "content": "Hello?"}]} | body))


BAD = {
    "unknown model": (_chat(model="mr-collins"), 404, "model_not_found"),
    "a path as a model": (_chat(model="../../etc/passwd"), 404, "model_not_found"),
    "no store yet": (_chat(model="daiyu"), 404, "model_not_ready"),
    "empty messages": (_chat(messages=[]), 400, "empty_messages"),
    "too many messages": (_chat(messages=[{"role": "user", "content": "hi"}] * 17), 400, "too_many_messages"),
    "no question last": (_chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]),
                         400, "no_question"),
    "empty question": (_chat(messages=[{"role": "user", "content": "  "}]), 400, "empty_question"),
    "an image": (_chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                 400, "unsupported_content"),
    "a tool message": (_chat(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"},
                                       {"role": "user", "content": "hi"}]), 400, "unsupported_role"),
    "bad role": (_chat(messages=[{"role": "narrator", "content": "hi"}]), 400, "invalid_value"),
    "temperature too high": (_chat(temperature=3), 400, "invalid_value"),
    "n=2": (_chat(n=2), 400, "unsupported_value"),
    "too long for the context": (_chat(messages=[{"role": "user", "content": "word " * 6000}]), 400,
                                 "context_length_exceeded"),
    "max_tokens past the context": (_chat(max_tokens=5900), 400, "context_length_exceeded"),
    "oversized body": (_chat(messages=[{"role": "user", "content": "x" * 120_000}]), 413, "request_too_large"),
    "missing messages": (lambda c: c.post("/chat/completions", cast_to=object, body={"model": "elizabeth"}), 400,
                         "missing_required_parameter"),
    "speech for nobody": (lambda c: c.audio.speech.create(model="nobody", voice="alloy", input="hi"), 404,
                          "model_not_found"),
    "a path as a voice": (lambda c: c.audio.speech.create(model="elizabeth", voice="../x", input="hi"), 400,
                          "invalid_value"),
    "empty speech input": (lambda c: c.audio.speech.create(model="elizabeth", voice="alloy", input=""), 400,
                           "invalid_value"),
    "not audio": (lambda c: c.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"not audio")), 400,
                  "invalid_audio"),
    "oversized upload": (lambda c: c.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"\0" * 700_000)),
                         413, "request_too_large"),
    "unknown language": (lambda c: c.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"x"),
                                                                 language="fr"), 400, "unsupported_value"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_error_json(client: openai.OpenAI, case: str) -> None:
    call, status, code = BAD[case]
    with pytest.raises(openai.APIStatusError) as err:
        call(client)
    assert err.value.status_code == status
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == code
    assert body["type"] == "invalid_request_error" and "Traceback" not in body["message"]


def test_malformed_json_and_unknown_routes(server) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = httpx.post(server[0] + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    chunked = httpx.post(server[0] + "/v1/chat/completions", headers=auth,
                         content=iter([b'{"model": "elizabeth", "messages": [{"role": "user", "content": "',
                                       b"x" * 150_000, b'"}]}']))  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    for path in ("/v1/../../etc/passwd", "/v1/files/etc/passwd", "/static/api.py"):
        resp = httpx.get(server[0] + path, headers=auth)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_url"


# --------------------------------------------------------------------------- security
def test_the_key_is_required_and_compared(server) -> None:
    for key in ("wrong", KEY + "x", KEY[:-1]):
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=server[0] + "/v1", api_key=key, max_retries=0).models.list()
        assert err.value.body["code"] == "invalid_api_key"
    missing = httpx.get(server[0] + "/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"


def test_refuses_to_listen_beyond_loopback_without_a_key(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIYIN_")} | {"ZHIYIN_HOME": str(home)}
    proc = subprocess.run([sys.executable, str(REPO / "api.py"), "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0 without an API key" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- audio
def test_speech_in_her_voice_and_transcription_round_trip(client: openai.OpenAI) -> None:
    said = "The garden is quiet tonight, and the moon is very bright."
    wav = client.audio.speech.create(model="elizabeth", voice="alloy", input=said, response_format="wav").content
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getnframes() / w.getframerate() > 1.5
    mp3 = client.audio.speech.create(model="elizabeth:roleplay", voice="alloy", input="Hello.").content
    opus = client.audio.speech.create(model="tts-1", voice="elizabeth", input="Hello.", response_format="opus").content
    assert mp3[:3] == b"ID3" or mp3[:2] == b"\xff\xfb"
    assert opus[:4] == b"OggS"
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav), language="en")
    words = set(re.findall(r"[a-z]+", heard.text.lower()))
    assert len(words & set(re.findall(r"[a-z]+", said.lower()))) >= 7, heard.text
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav),
                                                 response_format="verbose_json")
    assert verbose.language == "english" and verbose.duration > 1.5 and verbose.segments
    srt = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav), response_format="srt")
    assert "00:00:00,000 --> " in srt


# ------------------------------------------------------------------- start.py --api
def test_start_py_api_flag_builds_the_api_command() -> None:
    import start

    args = start.parser().parse_args(["--api", "--api-port", "8123"])
    assert args.api and start.api_command(args.host, args.api_port)[-4:] == ["--host", "127.0.0.1", "--port", "8123"]



def test_the_server_warms_each_characters_guard_lists_before_the_first_question(home: Path, tiny_qwen_dir: Path,  # noqa: F811
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What the page's warm-up does (her book's people, her world's words), `python api.py` does in a thread."""
    import llm
    from api.server import make_service, warm_characters
    from knowledge_base import mined
    from settings import load_settings

    monkeypatch.setenv("ZHIYIN_HOME", str(home))
    monkeypatch.setattr(mined, "_mined_cache", {})
    settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=1, max_tokens=4)
    warm_characters(make_service(settings, llm=llm.get_chat_model(settings)))
    kinds = {key.split("|")[0]: key for key in mined._mined_cache}
    assert "proper nouns" in kinds and "/elizabeth/" in kinds["proper nouns"]  # daiyu has no store: skipped
