"""Recall and speed of the store's own search (`KnowledgeStore.search`, second look included) over the stores
kb_bench.py left on EmbeddingGemma, at each share of BM25 in its score (`store.KEYWORD_SHARE`).

    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # builds bench-hlm, bench-pp
    python bench/kb_search.py --home DIR [--shares 0 0.05 0.1 0.2] [--no-second-look]

Same questions and hit rule as kb_bench (the evidence's words inside a passage). Writes
bench/results/kb_search.json and prints a table; the shipped share is marked.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))


def main() -> int:
    import argparse

    import kb_bench

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", required=True, help="the ZHIYIN_HOME kb_bench.py --home built and upgraded")
    p.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.2])
    p.add_argument("--no-second-look", action="store_true", help="search without the windows' second look")
    p.add_argument("--out", type=Path, default=HERE / "results" / "kb_search.json")
    args = p.parse_args()
    from knowledge_base import store as store_module

    shipped = store_module.KEYWORD_SHARE
    out: dict = {"command": " ".join(["python", "bench/kb_search.py", *sys.argv[1:]]), "shipped": shipped, "books": {}}
    for book, lang, store, sets in kb_bench.upgraded_stores(args.home):
        if args.no_second_look:
            store._windows = None
        store.search("warm-up")  # the model loads once
        for name, questions in sets:
            for share in args.shares:
                store_module.KEYWORD_SHARE = share
                found, times, misses = {1: 0, 5: 0, 20: 0}, [], []
                for item in questions:
                    evidence = [kb_bench._squash(e, lang) for e in item["evidence"]]
                    t = time.perf_counter()
                    hits = store.search(item["q"], k=20)
                    times.append((time.perf_counter() - t) * 1000)
                    ok = [any(e in kb_bench._squash(h.text, lang) for e in evidence) for h in hits]
                    for n in found:
                        found[n] += any(ok[:n])
                    if not any(ok[:5]):
                        misses.append(item["q"])
                row = {f"r@{n}": round(v / len(questions), 3) for n, v in found.items()}
                row |= {"search_p50_ms": round(statistics.median(times), 1), "misses@5": misses}
                out["books"].setdefault(book, {}).setdefault(name, {})[str(share)] = row
                mark = " (shipped)" if share == shipped else ""
                print(f"{book:20} {name:9} share {share:<5}{mark:10} r@1/5/20 "
                      f"{row['r@1']:.2f}/{row['r@5']:.2f}/{row['r@20']:.2f}  p50 {row['search_p50_ms']} ms")
        store_module.KEYWORD_SHARE = shipped
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
