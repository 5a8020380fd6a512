"""Recall@1/5/20 of other ways to ask EmbeddingGemma, over the stores kb_bench.py built (session 13).

    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # builds bench-hlm, bench-pp
    python bench/kb_query_variants.py --home DIR

Each row ranks every passage by exact search over the store's own vectors (no second look): the question
embedded with each of EmbeddingGemma's prompts and their sums; pseudo-relevance feedback (the top 3
passages added to the question's vector); a passage's score raised by its better neighbour's; and every
two-sentence window of the book searched (a passage scored by its best window). Same hit rule as kb_bench.
Writes bench/results/kb_query_variants.json.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))

PROMPTS = {"qa": "task: question answering | query: ", "search": "task: search result | query: ",
           "fact": "task: fact checking | query: ", "doc": "title: none | text: "}


def main() -> int:
    import kb_bench

    args = kb_bench.home_args(__doc__, "kb_query_variants.json")

    from knowledge_base.embedders import get_embedder

    emb = get_embedder("embeddinggemma")
    results: dict = {}
    for book, lang, store, sets in kb_bench.upgraded_stores(args.home):
        matrix, windows = store._dense_indexes[0].matrix, store._windows
        win_vecs, win_rows, n = windows._vectors.astype(np.float32), windows._rows, len(store.chunks)

        def best_window(q: np.ndarray) -> np.ndarray:
            best = np.full(n, -1.0, np.float32)
            np.maximum.at(best, win_rows, win_vecs @ q)
            return best

        def neighbours(s: np.ndarray, weight: float) -> np.ndarray:
            return s + weight * np.maximum(np.r_[-1.0, s[:-1]], np.r_[s[1:], -1.0])

        def feedback(q: np.ndarray, weight: float) -> np.ndarray:
            top = np.argsort(-(matrix @ q))[:3]
            q2 = q + weight * matrix[top].mean(0)
            return matrix @ (q2 / np.linalg.norm(q2))

        for name, questions in sets:
            vecs = {}
            for key, prompt in PROMPTS.items():
                emb.query_prompt = prompt
                vecs[key] = emb.embed([q["q"] for q in questions], query=True)
            gold = kb_bench.evidence_rows(store.chunks, questions, lang)
            variants: dict[str, Callable[[int], np.ndarray]] = {
                **{k: (lambda i, k=k: matrix @ vecs[k][i]) for k in PROMPTS},
                "qa+search": lambda i: matrix @ (vecs["qa"][i] + vecs["search"][i]),
                "qa+search+fact": lambda i: matrix @ (vecs["qa"][i] + vecs["search"][i] + vecs["fact"][i]),
                "all four": lambda i: matrix @ sum(vecs[k][i] for k in PROMPTS),
                "feedback 0.3": lambda i: feedback(vecs["qa"][i], 0.3),
                "feedback 0.6": lambda i: feedback(vecs["qa"][i], 0.6),
                "neighbour 0.1": lambda i: neighbours(matrix @ vecs["qa"][i], 0.1),
                "neighbour 0.2": lambda i: neighbours(matrix @ vecs["qa"][i], 0.2),
                "all windows 0.25": lambda i: 0.75 * (matrix @ vecs["qa"][i]) + 0.25 * best_window(vecs["qa"][i]),
                "all windows 0.5": lambda i: 0.5 * (matrix @ vecs["qa"][i]) + 0.5 * best_window(vecs["qa"][i]),
            }
            row = {label: kb_bench.recall_at((score(i) for i in range(len(questions))), gold)
                   for label, score in variants.items()}
            results[f"{book} {name}"] = row
            print(f"{book} {name}")
            for label, r in row.items():
                print(f"   {label:18} recall@1/5/20 {r}")
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
