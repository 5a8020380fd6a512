"""Recall@1/5/20 with other titles in EmbeddingGemma's document prompt (issue 13: "the context of a passage").

    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # builds bench-hlm, bench-pp
    python bench/kb_titles.py --home DIR [--books pride_and_prejudice] [--variants none book names chapter+names]

The stores embed each passage as ``title: <chapter heading> | text: <passage>``. This bench embeds every
passage of a book again with another title and ranks by exact search (no second look), against the
store's own vectors (``chapter``, as shipped):

- ``none``: ``title: none``;
- ``book``: the book's title and the chapter heading (``Pride and Prejudice, Chapter 5``);
- ``names``: the book's proper nouns found in the passage (voice/priming.py's miner: Darcy, Netherfield),
  in the order they first appear, at most six;
- ``chapter+names``: the heading, then those names.

Same questions and hit rule as kb_bench. Each variant embeds the whole book (P&P ~6 min, 红楼梦 ~30 min
on 2 cores without bf16). Writes bench/results/kb_titles.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))

BOOK_TITLES = {"hongloumeng": "红楼梦", "pride_and_prejudice": "Pride and Prejudice"}
MAX_NAMES = 6


def names_in(text: str, terms: list[str]) -> list[str]:
    """The terms found in ``text``, in the order they first appear."""
    found = sorted((text.find(t), t) for t in terms if t in text)
    return [t for _, t in found][:MAX_NAMES]


def titles(variant: str, chunks: list[dict], book: str, terms: list[str], lang: str) -> list[str]:
    sep = "、" if lang == "zh" else ", "
    out = []
    for c in chunks:
        chapter, names = c.get("chapter") or "", sep.join(names_in(c["text"], terms))
        out.append({"none": "none", "book": f"{BOOK_TITLES[book]}{sep}{chapter}".strip(sep),
                    "names": names or "none", "chapter+names": f"{chapter} {names}".strip() or "none"}[variant])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", required=True, help="the ZHIYIN_HOME kb_bench.py --home built and upgraded")
    p.add_argument("--books", nargs="+", default=["pride_and_prejudice"], choices=sorted(BOOK_TITLES))
    p.add_argument("--variants", nargs="+", default=["none", "book", "names", "chapter+names"],
                   choices=["none", "book", "names", "chapter+names"])
    p.add_argument("--out", type=Path, default=HERE / "results" / "kb_titles.json")
    args = p.parse_args()

    import kb_bench
    from tqdm import tqdm

    from knowledge_base.embedders import get_embedder
    from voice.priming import TERM_MINERS

    emb = get_embedder("embeddinggemma")
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    for book, lang, store, sets in kb_bench.upgraded_stores(args.home):
        if book not in args.books:
            continue
        chunks, n = store.chunks, len(store.chunks)
        terms = [t for t, _ in TERM_MINERS.create(lang, texts=[c["text"] for c in chunks])][:300]
        qsets = [(name, emb.embed([q["q"] for q in qs], query=True), kb_bench.evidence_rows(chunks, qs, lang))
                 for name, qs in sets]

        def recall(matrix: np.ndarray) -> dict[str, list[float]]:
            return {name: kb_bench.recall_at(qv @ matrix.T, gold) for name, qv, gold in qsets}

        row: dict[str, dict] = {"chapter (the store's own vectors)": recall(store._dense_indexes[0].matrix)}
        for variant in args.variants:
            t0 = time.perf_counter()
            inputs = [emb.passage(c["text"], t) for c, t in zip(chunks, titles(variant, chunks, book, terms, lang),
                                                                 strict=True)]
            parts = [emb.embed(inputs[i:i + 64]) for i in tqdm(range(0, n, 64), desc=f"{book} {variant}", unit="×64")]
            matrix = np.vstack(parts)
            row[variant] = recall(matrix)
            row[variant]["embed_s"] = round(time.perf_counter() - t0)
            print(f"{book} {variant}: {row[variant]}", flush=True)
        row["example titles"] = titles("chapter+names", chunks[100:103], book, terms, lang)
        results[book] = row
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
