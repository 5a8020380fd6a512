"""Benchmark the llamacpp backend on a ~1,200-token RAG prompt: time to first token, tokens/s, memory.

For each packaged size (0.5B, 1.5B), in its own process (so peak RSS is that model's):
the character card first, then four real passages from Dream of the Red Chamber, then the
question. Measures a cold first turn, then follow-up turns two ways:

- ``same``: the follow-up keeps the persona and passages and appends history + question
  (the prompt prefix cache covers all but the new tokens);
- ``new``: the follow-up retrieves new passages (only the persona prefix is cached).

Run: ``python bench/llm_bench.py [--sizes 0.5b,1.5b] [--threads 2] [--followups 5]``.
Writes bench/results/llm.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fileio import write_text_atomic  # noqa: E402  (after the repo is on sys.path)

CORPUS = REPO.parent / "shared" / "corpus" / "hongloumeng.txt"
RESULTS = REPO / "bench" / "results" / "llm.json"

# (question, keywords a passage must contain): the first is the first turn, the rest follow-ups.
QUESTIONS = [
    ("黛玉为什么要葬花？", ("葬花", "黛玉")),
    ("海棠诗社是谁起的头？", ("海棠", "诗社")),
    ("你初进贾府时，外祖母待你如何？", ("黛玉", "贾母", "外孙女")),
    ("宝玉的通灵宝玉是怎么来的？", ("宝玉", "通灵")),
    ("潇湘馆是什么样子？", ("潇湘馆", "竹")),
    ("你父亲林如海在哪里做官？", ("林如海", "扬州")),
    ("宝钗吃的冷香丸是什么？", ("宝钗", "冷香丸")),
]
PASSAGES_PER_TURN = 4
WINDOW, STEP = 300, 240


def load_text() -> str:
    return CORPUS.read_text(encoding="gb18030")


def passages_for(text: str, keywords: tuple[str, ...], k: int = PASSAGES_PER_TURN) -> list[str]:
    """The first k 300-character windows holding all keywords (a stand-in for retrieval)."""
    found = [text[i:i + WINDOW] for i in range(0, len(text), STEP) if all(w in text[i:i + WINDOW] for w in keywords)]
    extra = [text[i:i + WINDOW] for i in range(0, len(text), STEP) if keywords[0] in text[i:i + WINDOW]]
    return (found + [p for p in extra if p not in found])[:k]


def persona() -> str:
    import yaml

    card = yaml.safe_load((REPO / "knowledge" / "daiyu" / "card.yaml").read_text(encoding="utf-8"))
    return f"{card['persona']}\n说话方式：{card['speaking_style']}\n只根据下面书中的段落回答；书里没有写的，就说书中没有提到。"


def system_prompt(static: str, passages: list[str]) -> str:
    body = "\n\n".join(f"[段落{i + 1}] {p.strip()}" for i, p in enumerate(passages))
    return f"{static}\n\n书中的相关段落：\n{body}"


def count_tokens(server_url: str, text: str) -> int:
    req = urllib.request.Request(f"{server_url}/tokenize", data=json.dumps({"content": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return len(json.load(resp)["tokens"])


def turn(model, messages: list[tuple[str, str]], max_tokens: int) -> dict:
    """Stream one answer; return its text, TTFT and llama.cpp's own timings."""
    start = time.perf_counter()
    first = None
    parts, timings = [], {}
    for chunk in model.stream(messages, max_tokens=max_tokens):
        if chunk.content and first is None:
            first = time.perf_counter() - start
        parts.append(str(chunk.content))
        timings = chunk.response_metadata.get("timings", timings)
    total = time.perf_counter() - start
    return {
        "ttft_s": round(first if first is not None else total, 3),
        "total_s": round(total, 3),
        "prompt_tokens": int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),
        "cached_tokens": int(timings.get("cache_n", 0)),
        "evaluated_tokens": int(timings.get("prompt_n", 0)),
        "prompt_tok_s": round(timings.get("prompt_per_second", 0.0), 1),
        "gen_tokens": int(timings.get("predicted_n", 0)),
        "gen_tok_s": round(timings.get("predicted_per_second", 0.0), 1),
        "answer": "".join(parts),
    }


def run_size(size: str, threads: int, followups: int, max_tokens: int) -> dict:
    """Measure one packaged size in this process."""
    import llm
    from settings import load_settings

    text = load_text()
    static = persona()
    t0 = time.perf_counter()
    model = llm.get_chat_model(load_settings(llm_model=llm.SIZES[size], threads=threads, temperature=0))
    server = model.server
    load_s = time.perf_counter() - t0
    url = server.listening_address

    q0, kw0 = QUESTIONS[0]
    sys0 = system_prompt(static, passages_for(text, kw0))
    first = turn(model, [("system", sys0), ("human", q0)], max_tokens)
    parts = {
        "persona": count_tokens(url, static),
        "passages": count_tokens(url, sys0) - count_tokens(url, static),
        "question": count_tokens(url, q0),
    }
    print(f"[{size}] first turn: {first['ttft_s']} s to first token, {first['prompt_tokens']} prompt tokens",
          file=sys.stderr)

    # Follow-ups keeping the passages: history grows, the prefix cache covers the old part.
    same: list[dict] = []
    history: list[tuple[str, str]] = [("system", sys0), ("human", q0), ("ai", first["answer"])]
    for q, _ in QUESTIONS[1:1 + followups]:
        r = turn(model, [*history, ("human", q)], max_tokens)
        history += [("human", q), ("ai", r["answer"])]
        same.append(r)
        print(f"[{size}] follow-up (same passages): {r['ttft_s']} s, evaluated {r['evaluated_tokens']}",
              file=sys.stderr)

    # Follow-ups with newly retrieved passages: only the persona prefix is shared.
    new: list[dict] = []
    for q, kw in QUESTIONS[1:1 + followups]:
        r = turn(model, [("system", system_prompt(static, passages_for(text, kw))), ("human", q)], max_tokens)
        new.append(r)
        print(f"[{size}] follow-up (new passages): {r['ttft_s']} s, evaluated {r['evaluated_tokens']}",
              file=sys.stderr)

    def p50(rows: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    every = [first, *same, *new]
    return {
        "size": size,
        "model": llm.model_label(model),
        "threads": threads,
        "load_s": round(load_s, 2),
        "prompt_tokens_first_turn": first["prompt_tokens"],
        "prompt_tokens_by_part": parts,
        "ttft_first_turn_s": first["ttft_s"],
        "ttft_followup_same_passages_p50_s": p50(same, "ttft_s"),
        "ttft_followup_new_passages_p50_s": p50(new, "ttft_s"),
        "evaluated_tokens_followup_same_p50": p50(same, "evaluated_tokens"),
        "evaluated_tokens_followup_new_p50": p50(new, "evaluated_tokens"),
        "prompt_tok_s_first_turn": first["prompt_tok_s"],
        "gen_tok_s_p50": p50(every, "gen_tok_s"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "followups": followups,
        "max_tokens": max_tokens,
        "sample_answer": first["answer"],
        "turns": {"first": first, "same_passages": same, "new_passages": new},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5b,1.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--followups", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    if not CORPUS.is_file():
        print(f"error: the corpus is not at {CORPUS}; put hongloumeng.txt there.", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(run_size(args.child, args.threads, args.followups, args.max_tokens), ensure_ascii=False))
        return 0
    results = []
    for size in args.sizes.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", size, "--threads", str(args.threads),
             "--followups", str(args.followups), "--max-tokens", str(args.max_tokens)],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
        )
        if proc.returncode:
            print(f"error: the {size} run failed (exit {proc.returncode}); see the messages above.", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Keep earlier results for sizes not re-run, so one size can be re-measured alone.
    if RESULTS.is_file():
        done = {r["size"] for r in results}
        kept = [r for r in json.loads(RESULTS.read_text(encoding="utf-8")).get("results", []) if r["size"] not in done]
        results = sorted(kept + results, key=lambda r: r["size"])
    head = (f"{'model':45} {'prompt':>6} {'TTFT 1st':>8} {'TTFT f/u same':>13} {'TTFT f/u new':>12} "
            f"{'prompt t/s':>10} {'gen t/s':>7} {'RSS MB':>6}")
    print(head)
    for r in results:
        print(f"{r['model']:45} {r['prompt_tokens_first_turn']:>6} {r['ttft_first_turn_s']:>8} "
              f"{r['ttft_followup_same_passages_p50_s']:>13} {r['ttft_followup_new_passages_p50_s']:>12} "
              f"{r['prompt_tok_s_first_turn']:>10} {r['gen_tok_s_p50']:>7} {r['peak_rss_mb']:>6}")
    payload = {
        "command": "python bench/llm_bench.py (sizes run one at a time: --sizes 0.5b, then --sizes 1.5b)",
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": "2-core machine shared with other jobs: figures are conservative",
        "results": results,
    }
    write_text_atomic(RESULTS, json.dumps(payload, ensure_ascii=False, indent=2))
    print(f"wrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
