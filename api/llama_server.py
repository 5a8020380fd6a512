"""llama.cpp's own OpenAI-compatible server (tools/server, through the installed xllamacpp) as a process.

    python -m api.llama_server [--model qwen2.5-1.5b|PATH.gguf] [--host 127.0.0.1] [--port 8080]
                               [--threads 2] [--ctx 4096] [--parallel 1] [--api-key KEY]

A model server for the scale-out topology (docs/api.md): app and API processes on other machines reach
it with ``llm_backend = "openai"`` and ``openai_base_url = "http://HOST:PORT/v1"``. On a real deployment
llama.cpp's ``llama-server`` binary, vLLM or LMDeploy take this place; this one needs nothing but the
packages Zhiyin already installs. It prints its address on stdout at once; ``GET /health`` answers 200
once the model is loaded (503 before).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from api.security import is_loopback
from settings import find_checkpoint, models_dir

PACKAGED = {"qwen2.5-1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "qwen2.5-0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}


def gguf_path(name: str) -> Path:
    """A packaged model's assembled GGUF (``python -m llm prepare``) or a .gguf path."""
    if name in PACKAGED:
        found = find_checkpoint(PACKAGED[name])
        if found is None:
            raise SystemExit(f"error: {name} is not assembled in {models_dir()}; run "
                             f"`python -m llm prepare --size {name.split('-')[-1]}`.")
        return found
    path = Path(name).expanduser()
    if not path.is_file():
        raise SystemExit(f"error: no GGUF file at {path}; give a packaged name ({', '.join(PACKAGED)}) or a path.")
    return path


def start_server(model: Path, host: str, port: int, threads: int, ctx: int, parallel: int, api_key: str = "") -> object:
    """Load the model and start llama.cpp's HTTP server in this process; returns the xllamacpp.Server."""
    import xllamacpp

    from llm.llamacpp import base_params  # here, as xllamacpp: `--help` stays quick

    params = base_params(model, ctx * parallel, threads)  # llama.cpp splits the context between its slots
    params.hostnames = [host]
    params.port = port
    params.n_parallel = parallel
    if api_key:  # clients then send it as a bearer token (Zhiyin: the openai_api_key setting)
        params.api_keys = [api_key]
    return xllamacpp.Server(params)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.llama_server", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-1.5b", help="packaged name or .gguf path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096, help="context per slot")
    p.add_argument("--parallel", type=int, default=1, help="slots (requests decoded at once)")
    p.add_argument("--api-key", default=os.environ.get("LLAMA_API_KEY", ""),
                   help="required bearer token (default: $LLAMA_API_KEY; needed beyond loopback)")
    args = p.parse_args(argv)
    try:
        if not args.api_key and not is_loopback(args.host):
            raise SystemExit(f"error: refusing to listen on {args.host} without --api-key (or LLAMA_API_KEY).")
        server = start_server(gguf_path(args.model), args.host, args.port, args.threads, args.ctx, args.parallel,
                              args.api_key)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    print(getattr(server, "listening_address", f"http://{args.host}:{args.port}"), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
