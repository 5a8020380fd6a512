"""Recall with and without the second look (knowledge_base/windows.py), over stores kb_bench.py built.

    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # builds bench-hlm, bench-pp
    python bench/kb_second_look.py --home DIR

For each novel and question set: recall@1 / @5 of EmbeddingGemma's own ranking, and after the second
look at each passage weight and depth tried (the shipped setting is PASSAGE_WEIGHT, DEPTH). Same hit rule
as kb_bench. Writes bench/results/kb_second_look.json and prints a table.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))

WEIGHTS = (1.0, 0.85, 0.75, 0.6, 0.5)  # 1.0: the passage score alone, i.e. no second look
DEPTHS = (10, 20)


def main() -> int:
    import kb_bench

    args = kb_bench.home_args(__doc__, "kb_second_look.json")

    from knowledge_base import windows
    from knowledge_base.embedders import get_embedder
    from knowledge_base.store import CANDIDATES

    emb = get_embedder("embeddinggemma")
    shipped = (windows.PASSAGE_WEIGHT, windows.DEPTH)
    results: dict = {"shipped": {"weight": shipped[0], "depth": shipped[1]}, "books": {}}
    for book, lang, store, sets in kb_bench.upgraded_stores(args.home):
        index = store._dense_indexes[0]
        for name, questions in sets:
            vecs = emb.embed([q["q"] for q in questions], query=True)
            row = {}
            for weight in WEIGHTS:
                for depth in DEPTHS:
                    windows.PASSAGE_WEIGHT, windows.DEPTH = weight, depth
                    r1 = r5 = 0
                    for item, vec in zip(questions, vecs, strict=True):
                        evidence = [kb_bench._squash(e, lang) for e in item["evidence"]]
                        rows = store._windows.second_look(vec, index.matrix, index.top(vec, CANDIDATES))[:5]
                        found = [any(e in kb_bench._squash(store.chunks[r]["text"], lang) for e in evidence)
                                 for r in rows]
                        r1 += found[0]
                        r5 += any(found)
                    row[f"weight {weight} depth {depth}"] = [round(r1 / len(questions), 3), round(r5 / len(questions), 3)]
            windows.PASSAGE_WEIGHT, windows.DEPTH = shipped
            results["books"].setdefault(book, {})[name] = row
            off, on = row[f"weight 1.0 depth {shipped[1]}"], row[f"weight {shipped[0]} depth {shipped[1]}"]
            print(f"{book:20} {name:9} recall@1/@5 without {off[0]:.2f}/{off[1]:.2f}  with {on[0]:.2f}/{on[1]:.2f}")
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
