"""How fast llama.cpp reads a prompt with and without repacking the model's weights (cpu.llama_repack).

Loads the packaged 1.5B once per round and layout, alternating the layouts (this machine's speed drifts),
and reads a ~800-token Chinese prompt three times each with the prompt cache off, 2 threads.
Run: ``python bench/llama_layout.py [--rounds 2]``; writes bench/results/llama_layout.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import cpu  # noqa: E402  (after the repo is on sys.path)
import llm  # noqa: E402
from llm.llamacpp import base_params  # noqa: E402
from fileio import write_text_atomic  # noqa: E402
from knowledge_base.reading import read_text  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "hongloumeng.txt"
RESULTS = REPO / "bench" / "results" / "llama_layout.json"


def measure(model: Path, repack: bool, prompt: str, reads: int) -> dict:
    import xllamacpp

    params = base_params(model, 4096, 2, repack=repack)
    params.n_parallel = 1
    t0 = time.perf_counter()
    server = xllamacpp.Server(params)
    load = time.perf_counter() - t0
    prompt_speed, gen_speed, n = [], [], 0
    for i in range(reads):  # a different first character each time: nothing is reused
        reply = server.handle_chat_completions({"messages": [{"role": "user", "content": f"{i}。{prompt}\n这段写了什么？"}],
                                                "max_tokens": 24, "temperature": 0, "cache_prompt": False})
        t = reply["timings"]
        prompt_speed.append(round(t["prompt_per_second"], 1))
        gen_speed.append(round(t["predicted_per_second"], 1))
        n = t["prompt_n"]
    return {"repack": repack, "load_s": round(load, 2), "prompt_tokens": n, "prompt_tok_s": prompt_speed,
            "gen_tok_s": gen_speed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reads", type=int, default=3)
    args = ap.parse_args()
    model = llm.prepare_default_model("1.5b")
    text, _ = read_text(CORPUS)
    prompt = text[20000:20900]
    runs = []
    for _ in range(args.rounds):
        for repack in (False, True):
            runs.append(measure(model, repack, prompt, args.reads))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for repack in (False, True):
        speeds = [s for r in runs if r["repack"] is repack for s in r["prompt_tok_s"]]
        summary["repack" if repack else "no_repack"] = {"prompt_tok_s_mean": round(statistics.mean(speeds), 1),
                                                        "min": min(speeds), "max": max(speeds)}
    out = {"cpu_flags_avx512f": "avx512f" in cpu.flags(), "chosen_repack": cpu.llama_repack(),
           "summary": summary, "runs": runs}
    write_text_atomic(RESULTS, json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
