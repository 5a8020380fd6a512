"""Benchmark the API under 1, 2 and 4 concurrent clients: requests per minute, time to first token.

Two backends, each a real `python api.py` process driven by the official `openai` client over loopback:

- ``embedded``: the default, llama.cpp in the API process (one slot: requests take turns);
- ``llama-server``: llama.cpp's own OpenAI-compatible server as a separate process (api/llama_server.py,
  a slot per client of the largest level, continuous batching) behind the API's ``openai`` backend.

Each client sends streamed reader-mode questions one after another (林黛玉's questions of
bench/data/chat_questions.json and Elizabeth's prompts of bench/data/roleplay_prompts.json, each a
new conversation, so every request reads a full first-turn prompt); time to first token is measured
by the client, from sending the request to the first piece of the answer, so waiting for the slot is
included. Stores are the full novels with USE, built in ``--home`` the first time (reused after).

Run: ``python bench/api_bench.py [--backends embedded,llama-server] [--clients 1,2,4] [--requests 4]
[--max-tokens 64] [--threads 2] [--home DIR]``; ``--smoke`` sends one request per client at each level
with a 16-token cap. Writes bench/results/api.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fileio import write_text_atomic  # noqa: E402  (after the repo is on sys.path)

CORPUS = REPO.parent / "shared" / "corpus"
DATA = REPO / "bench" / "data"
RESULTS = REPO / "bench" / "results" / "api.json"
BOOKS = {"daiyu": "hongloumeng.txt", "elizabeth": "pride_and_prejudice.txt"}
GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def questions() -> list[tuple[str, str]]:
    """(model, question) pairs, alternating the two characters."""
    zh = [q["q"] for q in json.loads((DATA / "chat_questions.json").read_text(encoding="utf-8"))["daiyu"]]
    en = json.loads((DATA / "roleplay_prompts.json").read_text(encoding="utf-8"))["elizabeth"]
    out = []
    for a, b in zip(zh, en + en, strict=False):
        out += [("daiyu", a), ("elizabeth", b)]
    return out


def ensure_stores(home: Path) -> None:
    env = dict(os.environ, ZHIYIN_HOME=str(home))
    code = ("from knowledge_base.builder import build\nfrom knowledge_base.store import KnowledgeStore\n"
            f"for cid, book in {BOOKS!r}.items():\n"
            "    if not KnowledgeStore.exists(cid):\n"
            f"        build(cid, [{str(CORPUS)!r} + '/' + book], embedder='use')\n")
    print(f"stores in {home} (built with USE the first time: a minute or two)…", file=sys.stderr)
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def one_request(client, model: str, question: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, pieces, extra, usage = None, 0, {}, None
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces += 1
        extra |= (chunk.model_extra or {}).get("zhiyin") or {}
        usage = chunk.usage or usage
    end = time.perf_counter()
    return {"model": model, "ttft_s": round((first or end) - t0, 3), "total_s": round(end - t0, 3),
            "queued_ms": extra.get("queued_ms"), "completion_tokens": usage.completion_tokens if usage else None,
            "prompt_tokens": usage.prompt_tokens if usage else None}


def run_level(url: str, clients: int, per_client: int, max_tokens: int, jobs) -> dict:  # noqa: ANN001
    """``clients`` threads, each sending ``per_client`` requests from ``jobs`` (shared across levels: a question
    asked again would find its whole prompt in llama.cpp's cache)."""
    import openai

    lock = threading.Lock()
    rows: list[dict] = []
    errors: list[str] = []

    def client_loop() -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=1800)
        for _ in range(per_client):
            with lock:
                model, q = next(jobs)
            try:
                row = one_request(client, model, q, max_tokens)
            except Exception as exc:  # counted, not fatal: a benchmark reports failures
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                rows.append(row)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = sorted(r["ttft_s"] for r in rows)

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    tokens = sum(r["completion_tokens"] or 0 for r in rows)
    return {"clients": clients, "requests": len(rows), "errors": errors, "wall_s": round(wall, 1),
            "requests_per_min": round(len(rows) / wall * 60, 2) if rows else 0.0,
            "ttft_p50_s": round(statistics.median(ttft), 2) if ttft else None, "ttft_p95_s": pct(ttft, 0.95),
            "queued_ms_p50": statistics.median([r["queued_ms"] or 0 for r in rows]) if rows else None,
            "output_tok_per_s": round(tokens / wall, 2), "rows": rows}


def api_env(home: Path, threads: int, backend: str, base_url: str, parallel: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIYIN_")}
    env |= {"ZHIYIN_HOME": str(home), "ZHIYIN_MODELS": os.environ.get("ZHIYIN_MODELS", str(REPO / "checkpoints")),
            "ZHIYIN_THREADS": str(threads)}
    if backend == "llama-server":
        env |= {"ZHIYIN_LLM_BACKEND": "openai", "ZHIYIN_OPENAI_BASE_URL": base_url, "ZHIYIN_LLM_MODEL": "qwen",
                "ZHIYIN_API_PARALLEL": str(parallel)}
    return env


def run_backend(backend: str, args: argparse.Namespace, pool: list[tuple[str, str]]) -> list[dict]:
    """One API process (and for llama-server one model server with a slot per client of the largest
    level), warmed once, then each concurrency level in turn."""
    import openai

    model_server = None
    base = ""
    slots = max(args.clients)
    if backend == "llama-server":
        port = free_port()
        model_server = subprocess.Popen(
            [sys.executable, "-m", "api.llama_server", "--port", str(port), "--threads", str(args.threads),
             "--parallel", str(slots)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, ZHIYIN_MODELS=os.environ.get("ZHIYIN_MODELS", str(REPO / "checkpoints"))))
        base = f"http://127.0.0.1:{port}/v1"
    api_port = free_port()
    log = open(Path(tempfile.gettempdir()) / f"zhiyin-api-bench-{backend}.log", "w")  # noqa: SIM115
    api = None
    levels = []
    try:
        if model_server is not None:
            wait_ok(base.removesuffix("/v1") + "/health", model_server)
        api = subprocess.Popen([sys.executable, str(REPO / "api.py"), "--port", str(api_port), "--log-level", "warning"],
                               cwd=REPO, env=api_env(args.home, args.threads, backend, base, slots),
                               stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{api_port}"
        wait_ok(url + "/health", api)
        warm = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=1800)
        for model in ("daiyu", "elizabeth"):  # loads the model, both stores and the embedder: not measured
            one_request(warm, model, "你好" if model == "daiyu" else "Hello", 1)
        jobs = iter(pool * 4)
        for clients in args.clients:
            print(f"{backend}: {clients} client(s)…", file=sys.stderr)
            level = run_level(url, clients, args.requests, args.max_tokens, jobs)
            level["backend"] = backend
            levels.append(level)
            print(f"  {level['requests']} requests, {level['requests_per_min']} /min, ttft p50 "
                  f"{level['ttft_p50_s']} s p95 {level['ttft_p95_s']} s, errors {len(level['errors'])}",
                  file=sys.stderr)
    finally:
        for proc in (api, model_server):
            if proc is not None:
                stop(proc)
        log.close()
    return levels


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="embedded,llama-server")
    p.add_argument("--clients", default="1,2,4")
    p.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads (the machine's 2 cores)")
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "zhiyin-api-bench")
    p.add_argument("--smoke", action="store_true", help="one request per client at each level, 16 tokens")
    args = p.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if args.smoke:
        args.requests, args.max_tokens = 1, 16
    models = Path(os.environ.get("ZHIYIN_MODELS", str(REPO / "checkpoints")))
    if not (models / GGUF).is_file():
        print(f"error: {models / GGUF} is missing; run `python -m llm prepare`.", file=sys.stderr)
        return 2
    ensure_stores(args.home)
    pool = questions()
    levels = []
    for backend in args.backends.split(","):
        levels += run_backend(backend, args, pool)
    result = {"smoke": args.smoke, "threads": args.threads, "max_tokens": args.max_tokens,
              "requests_per_client": args.requests, "cpus": os.cpu_count(), "load_avg_after": os.getloadavg(),
              "when": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv), "levels": levels}
    write_text_atomic(RESULTS, json.dumps(result, ensure_ascii=False, indent=1))
    print(f"\n{'backend':<13}{'clients':>8}{'req/min':>9}{'ttft p50':>10}{'ttft p95':>10}{'errors':>8}")
    for lv in levels:
        print(f"{lv['backend']:<13}{lv['clients']:>8}{lv['requests_per_min']:>9}{lv['ttft_p50_s']!s:>10}"
              f"{lv['ttft_p95_s']!s:>10}{len(lv['errors']):>8}")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
