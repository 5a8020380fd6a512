"""Past one machine: the stores on a Chroma server, the chat model on a model server.

chroma_url: a real `chroma run` server process on loopback, shared by homes that stand for machines
(each its own ZHIYIN_HOME, so nothing is shared but the server). Builds, the atomic swap and the e5
upgrade keep their guarantees there: a reader elsewhere sees the old version or the new one, a failed
build leaves the live version answering and nothing behind. Slow: llama.cpp's own OpenAI-compatible
server (the packaged GGUF) behind the `openai` backend, and the API in front of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from knowledge_base import builder, remote
from knowledge_base.builder import build, upgrade
from knowledge_base.store import KnowledgeStore, store_root
from tests.conftest import REPO
from tests.test_api import KITTEN, free_port, home, server_env, start_api, stop  # noqa: F401  (home: a fixture)

CHROMA = Path(sys.executable).parent / "chroma"
BOOK = """Chapter 1

Elizabeth kept a grey kitten named Pemberley-Puss at Longbourn, a gift from her aunt Gardiner, and
taught it to sit on the third stair of the staircase while she read.

Chapter 2

Elizabeth walked three miles across the muddy fields to Netherfield, because her sister Jane had
fallen ill there, and she arrived with her petticoat six inches deep in mud.
"""
SECOND_BOOK = """Chapter 1

Mr. Bennet kept a brass telescope called the Admiral in his library, and on clear nights he and
Mary watched the moons of Jupiter from the roof above the nursery.
"""


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`chroma run --path DIR --host 127.0.0.1 --port P`, a real server process."""
    if not CHROMA.is_file():
        pytest.skip(f"the chroma CLI is not at {CHROMA}")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = (data / "server.log").open("w")
    proc = subprocess.Popen([str(CHROMA), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (data / "server.log").read_text()
        try:
            if httpx.get(url + "/api/v2/heartbeat", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def machines(tmp_path: Path, chroma_url: str, monkeypatch: pytest.MonkeyPatch):
    """Two homes on one Chroma server; ``on(name)`` makes this process that machine."""
    monkeypatch.setenv("ZHIYIN_CHROMA_URL", chroma_url)
    homes = {name: tmp_path / name for name in ("builder", "reader")}

    def on(name: str) -> Path:
        homes[name].mkdir(exist_ok=True)
        monkeypatch.setenv("ZHIYIN_HOME", str(homes[name]))
        return homes[name]

    return on


def new_character(folder: Path, text: str = BOOK, name: str = "book.txt") -> tuple[str, Path]:
    cid = f"eliza-{uuid.uuid4().hex[:6]}"  # the server outlives a test: each test its own character
    book = folder / "in" / name
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(text, encoding="utf-8")
    return cid, book


def server_names(cid: str) -> set[str]:
    cols = remote.server().list_collections()
    return {n for n in (c if isinstance(c, str) else c.name for c in cols) if n.startswith(remote.prefix(cid))}


def test_a_store_built_on_one_machine_is_searched_from_another_process(machines, chroma_url: str) -> None:
    home = machines("builder")
    cid, book = new_character(home)
    report = build(cid, [book], name="Elizabeth", lang="en", embedder="use")
    version = store_root(cid) / report.version
    assert report.chunks >= 2 and remote.live_version(cid) == report.version
    assert not (version / "chroma" / "chroma.sqlite3").exists(), "no vectors in local files: they are on the server"
    assert {remote.pointer_name(cid), remote.chunks_name(cid, report.version)} <= server_names(cid)
    reader_home = machines("reader")
    code = ("import json, sys; from knowledge_base.store import KnowledgeStore\n"
            f"s = KnowledgeStore.open({cid!r}); h = s.search('What was the name of the grey kitten?', k=1)[0]\n"
            "print(json.dumps({'version': s.version.name, 'text': h.text, 'chapter': h.chapter}))")
    env = dict(os.environ, ZHIYIN_HOME=str(reader_home), ZHIYIN_CHROMA_URL=chroma_url)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["version"] == report.version and "Pemberley-Puss" in seen["text"] and seen["chapter"] == "Chapter 1"
    # The reader machine has her passages, tokens and BM25 from the server, and no vectors of its own.
    cached = reader_home / "stores" / cid / report.version
    assert (cached / "bm25").is_dir() and not (cached / "chroma").exists()


def test_a_failed_build_changes_nothing_and_a_rebuild_swaps_for_every_reader(machines, monkeypatch) -> None:
    home = machines("builder")
    cid, book = new_character(home)
    first = build(cid, [book], name="Elizabeth", lang="en", embedder="use").version
    machines("reader")
    before = KnowledgeStore.open(cid)
    assert before.version.name == first

    machines("builder")
    _, extra = new_character(home, SECOND_BOOK, "telescope.txt")
    real_add = builder.add_vectors

    def fail_midway(collection, chunks, vectors, progress) -> None:  # noqa: ANN001
        real_add(collection, chunks[:1], vectors[:1], progress)  # some vectors reach the server, then it breaks
        raise RuntimeError("the builder machine lost power")

    monkeypatch.setattr(builder, "add_vectors", fail_midway)
    with pytest.raises(RuntimeError):
        build(cid, [extra], embedder="use")
    monkeypatch.setattr(builder, "add_vectors", real_add)
    assert remote.live_version(cid) == first, "a failed build never moves the pointer"
    assert {n.rsplit(".", 1)[-1] for n in server_names(cid) if "." in n} == {first}, "and leaves nothing behind"

    second = build(cid, [extra], embedder="use").version
    assert second != first and remote.live_version(cid) == second
    machines("reader")
    after = KnowledgeStore.open(cid)
    assert after.version.name == second
    assert any("Admiral" in h.text for h in after.search("What was Mr. Bennet's telescope called?", k=2))
    assert any("Pemberley-Puss" in h.text for h in after.search("the grey kitten's name", k=2))  # kept, not re-read
    # A reader still holding the replaced version finishes its search (kept for the grace period).
    assert before.search("the grey kitten's name", k=1)


def test_the_e5_upgrade_swaps_on_the_server(machines, no_gemma) -> None:  # no_gemma: e5 is the target
    home = machines("builder")
    cid, book = new_character(home)
    first = build(cid, [book], name="Elizabeth", lang="en", embedder="use").version
    assert upgrade(cid) is True
    live = remote.live_version(cid)
    assert live != first
    machines("reader")
    store = KnowledgeStore.open(cid)
    assert store.embedder_name == "e5" and set(store.stats()["searching"]) == {"e5", "use", "bm25"}
    assert "Pemberley-Puss" in store.search("What was the name of the grey kitten?", k=1)[0].text


def test_without_chroma_url_the_store_stays_in_local_files(tmp_path: Path) -> None:
    cid, book = new_character(tmp_path)
    report = build(cid, [book], name="Elizabeth", lang="en", embedder="use")
    assert (store_root(cid) / report.version / "chroma" / "chroma.sqlite3").is_file()
    assert (store_root(cid) / "CURRENT").read_text().strip() == report.version


# ------------------------------------------------- a model server (llama.cpp's own), slow
def wait_status(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the llama.cpp server exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} was not ready in {timeout} s")


@pytest.mark.slow
def test_the_openai_backend_through_llama_cpps_own_server(home: Path, tmp_path: Path) -> None:
    """The packaged GGUF in llama.cpp's OpenAI-compatible server (a process), the API in front of it."""
    from llm import get_chat_model
    from settings import load_settings

    if not (REPO / "checkpoints" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf").is_file():
        pytest.skip("the packaged GGUF is not assembled: run `python -m llm prepare`")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIYIN_")} | {
        "ZHIYIN_MODELS": str(REPO / "checkpoints")}
    model_server = subprocess.Popen([sys.executable, "-m", "api.llama_server", "--port", str(port), "--threads", "2"],
                                    cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_status(f"http://127.0.0.1:{port}/health", model_server)
        # The backend alone: real token streaming, the token cap and stop strings reach the server.
        chat = get_chat_model(load_settings(llm_backend="openai", openai_base_url=base, llm_model="qwen",
                                            temperature=0, max_tokens=12))
        pieces = [c.content for c in chat.stream([("human", "Count from one to twenty in words, comma separated.")])
                  if c.content]
        assert len(pieces) >= 5 and "one" in "".join(pieces).lower()
        stopped = chat.invoke([("human", "Count from one to twenty in words, comma separated.")], stop=["four"])
        assert "four" not in stopped.content.lower() and "two" in stopped.content.lower()
        # The API in front of it: she answers from her store through the model server.
        proc, url = start_api(server_env(home, Path("unused"), ZHIYIN_LLM_BACKEND="openai", ZHIYIN_LLM_MODEL="qwen",
                                         ZHIYIN_OPENAI_BASE_URL=base, ZHIYIN_MAX_TOKENS="24"), tmp_path / "api.log")
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
            stream = client.chat.completions.create(
                model="elizabeth:roleplay", messages=[{"role": "user", "content": KITTEN}], stream=True,
                stream_options={"include_usage": True})
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            # Token streaming through the backend is checked above; here the persona guard holds a role-play
            # answer's first sentence until it cannot be an echo, so a one-sentence answer is one delta.
            assert [c for c in chunks if c.choices and c.choices[0].delta.content] and text.strip(), text
            assert chunks[-1].usage.completion_tokens <= 24 and chunks[-1].usage.prompt_tokens > 200
            assert chunks[0].model_extra["sources"] and chunks[-1].system_fingerprint.startswith("openai:")
        finally:
            stop(proc)
    finally:
        stop(model_server)
