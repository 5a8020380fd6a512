"""How fast the chat model reads new prompt tokens after a cached prefix (issue 14: why a first turn takes what it does).

    python bench/llama_context.py [--rounds 2] [--text PATH]

A role-play first turn restores her prompt head's state (~1,500-1,600 tokens) and reads ~200 new tokens
(passages, her lines, the question, the template) before its first token. This bench reads the same amounts
of a novel's text through the app's llama.cpp server (the packaged 1.5B, 2 threads, the app's weight layout):
~210 new tokens cold, after ~430 and after ~1,700 cached ones, and ~870 cold; llama.cpp's own timings give
tokens a second. Rounds interleave so a noisy machine spreads over all rows alike.
Writes bench/results/llama_context.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))
CORPUS = HERE.parent.parent / "shared" / "corpus" / "hongloumeng.txt"

# Character slices of the Chinese novel (~1.0-1.1 characters a token): what each row reads.
ROWS = {"210 new, cold": (None, (5000, 5270)), "210 new after 430 cached": ((0, 520), (3000, 3270)),
        "210 new after 1,700 cached": ((0, 2080), (3000, 3270)), "870 new, cold": (None, (6000, 7050))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--text", type=Path, default=CORPUS, help="a Chinese novel (../shared/corpus/hongloumeng.txt)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "llama_context.json")
    args = p.parse_args()
    if not args.text.is_file():
        print(f"error: {args.text} not found; pass --text with a Chinese novel.", file=sys.stderr)
        return 2

    import llm
    from knowledge_base.reading import read_text
    from settings import load_settings

    model = llm.get_chat_model(load_settings())
    server = model.server
    book = read_text(args.text)[0]  # the corpus's 红楼梦 is GB18030

    def read(prompt: str) -> dict:
        out = server.handle_completions({"prompt": prompt, "n_predict": 1, "cache_prompt": True, "temperature": 0})
        return out["timings"]

    seen: dict[str, list[dict]] = {name: [] for name in ROWS}
    for round_ in range(args.rounds):
        # Other text each round: llama.cpp keeps earlier prompts in memory and would find a repeated one cached.
        text = book[20000 + 10000 * round_:]
        for name, (head, new) in ROWS.items():
            prompt = text[new[0]:new[1]]
            if head:
                read(text[head[0]:head[1]])  # the cached prefix, as her restored head
                prompt = text[head[0]:head[1]] + prompt
            t = read(prompt)
            seen[name].append({"new": t["prompt_n"], "cached": t.get("cache_n", 0),
                               "tokens_per_s": round(t["prompt_per_second"], 1)})
            print(f"{name:28} {seen[name][-1]}", flush=True)
    summary = {name: {"new": rows[0]["new"], "cached": rows[0]["cached"],
                      "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rows)}
               for name, rows in seen.items()}
    result = {"command": "python bench/llama_context.py " + " ".join(sys.argv[1:]), "model": llm.model_label(model),
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "summary": summary, "rows": seen}
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
