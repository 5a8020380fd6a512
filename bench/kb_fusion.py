"""Fusion tuning: recall@1/5/20 of each ranker alone and of weighted rank fusions, over a built store.

    python bench/kb_fusion.py --home DIR --character bench-pp --book pride_and_prejudice [--dense use embeddinggemma]

Reads the store's chunks and BM25 index, and each dense embedder's vectors from the store's vector
cache (so an upgrade still running or interrupted can be measured: with ``--prefix`` only the chunks
the slowest embedder has reached are searched, and only the questions whose evidence lies in them
are asked: a smaller haystack than the whole book, to compare rankers with each other, not with the
whole-book figures). Writes bench/results/kb_fusion.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))
LANG = {"hongloumeng": "zh", "pride_and_prejudice": "en"}


def _squash(text: str, lang: str) -> str:
    return "".join(text.split()) if lang == "zh" else " ".join(text.split())


def cached_vectors(root: Path, name: str, chunks: list[dict]) -> np.ndarray | None:
    """Row-aligned vectors of ``name`` from the store's cache (NaN rows where not embedded yet)."""
    from knowledge_base.embedders import get_embedder, passage_inputs
    from knowledge_base.vector_cache import VectorCache, text_key

    emb = get_embedder(name)
    cache = VectorCache(root / "vectors.sqlite", name, emb.dim)
    keys = [text_key(t) for t in passage_inputs(emb, chunks)]
    found = cache.get_many(sorted(set(keys)))
    cache.close()
    out = np.full((len(chunks), emb.dim), np.nan, np.float32)
    for row, key in enumerate(keys):
        if key in found:
            out[row] = found[key]
    return out


def _z(scores: np.ndarray) -> np.ndarray:
    """Scores as standard deviations above their mean: comparable across rankers."""
    scores = np.asarray(scores, np.float32)
    return (scores - scores.mean()) / max(float(scores.std()), 1e-6)


def fuse(rankings: list[tuple[list[int], float]], k: int, depth: int, n_rows: int, neighbours: float) -> list[int]:
    """Weighted reciprocal-rank fusion of row rankings (each cut at ``depth``), neighbour sharing, best first."""
    score: dict[int, float] = {}
    for rows, weight in rankings:
        for rank, row in enumerate(rows[:depth]):
            score[row] = score.get(row, 0.0) + weight / (k + rank)
    if neighbours:
        shared = dict(score)
        for row, s in score.items():
            for near in (row - 1, row + 1):
                if 0 <= near < n_rows:
                    shared[near] = shared.get(near, 0.0) + neighbours * s
        score = shared
    return sorted(score, key=lambda r: (-score[r], r))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", required=True, help="the ZHIYIN_HOME the store was built in")
    p.add_argument("--character", required=True)
    p.add_argument("--book", required=True, choices=sorted(LANG), help="question-set key")
    p.add_argument("--dense", nargs="+", default=["use", "embeddinggemma"])
    p.add_argument("--prefix", action="store_true", help="search only the chunks every dense index has")
    p.add_argument("--matryoshka", nargs="*", type=int, default=[512, 256],
                   help="also rank with each dense index cut to these dimensions (alone, not fused)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "kb_fusion.json")
    args = p.parse_args()
    os.environ["ZHIYIN_HOME"] = args.home
    from knowledge_base import keywords
    from knowledge_base.embedders import get_embedder
    from knowledge_base.store import current_version, read_chunks, read_manifest, store_root

    root = store_root(args.character)
    version = current_version(root)
    chunks = read_chunks(version)
    tokenize = keywords.tokenizer_for(read_manifest(version).get("names", []))  # as the store searches
    index = keywords.KeywordIndex.load(version / "bm25")
    mats = {name: cached_vectors(root, name, chunks) for name in args.dense}
    have = np.all([~np.isnan(m[:, 0]) for m in mats.values()], axis=0)
    rows = np.flatnonzero(have) if args.prefix else np.arange(len(chunks))
    if not args.prefix and not have.all():
        raise SystemExit(f"only {int(have.sum())} of {len(chunks)} chunks have every embedder's vector; use --prefix")
    lang = LANG[args.book]
    sets = {}
    for label, file in (("ours", "retrieval_questions.json"), ("held-out", "retrieval_questions_heldout.json")):
        qs = json.loads((HERE / "data" / file).read_text(encoding="utf-8"))[args.book]
        texts = [_squash(chunks[r]["text"], lang) for r in rows]
        gold = [{i for i, t in enumerate(texts) if any(_squash(e, lang) in t for e in q["evidence"])} for q in qs]
        sets[label] = [(q["q"], g) for q, g in zip(qs, gold, strict=True) if g]  # asked only where answerable
    # Each ranker's full ranking of the searched rows, per question (query embeddings timed).
    ranked: dict[str, dict[str, list[int]]] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}  # name -> question -> z-scored scores of the searched rows
    query_ms: dict[str, float] = {}
    for name in args.dense:
        emb, m = get_embedder(name), mats[name][rows]
        t = time.perf_counter()
        qvecs = {q: emb.embed([q], query=True)[0] for qs in sets.values() for q, _ in qs}
        query_ms[name] = round((time.perf_counter() - t) * 1000 / max(1, len(qvecs)), 1)
        raw[name] = {q: _z(m @ v) for q, v in qvecs.items()}
        ranked[name] = {q: np.argsort(-raw[name][q], kind="stable").tolist() for q in qvecs}
        for d in (x for x in args.matryoshka if x < emb.dim):  # the first d dimensions, renormalised
            md = m[:, :d] / np.linalg.norm(m[:, :d], axis=1, keepdims=True)
            ranked[f"{name}@{d}"] = {q: np.argsort(-(md @ (v[:d] / np.linalg.norm(v[:d]))), kind="stable").tolist()
                                     for q, v in qvecs.items()}
    sub = {int(r): i for i, r in enumerate(rows)}
    ranked["bm25"], raw["bm25"] = {}, {}
    for qs in sets.values():
        for q, _ in qs:
            scores, cover = index.scores(tokenize(q))
            order = [sub[int(r)] for r in np.argsort(-scores, kind="stable") if scores[r] > 0 and int(r) in sub]
            ranked["bm25"][q] = order if cover else []
            raw["bm25"][q] = cover * _z(scores[rows]) if cover else np.zeros(len(rows), np.float32)

    def recall(order_of, qs) -> dict:
        hits = {n: sum(bool(set(order_of(q)[:n]) & g) for q, g in qs) / len(qs) for n in (1, 5, 20)}
        return {f"r@{n}": round(v, 3) for n, v in hits.items()}

    variants: dict[str, dict] = {}
    for name in ranked:
        variants[name] = {s: recall(lambda q, n=name: ranked[n][q], qs) for s, qs in sets.items()}
    strong = args.dense[-1]  # the strongest dense ranker comes last
    others = [n for n in ranked if n != strong and "@" not in n]
    for weights in itertools.product((0.0, 0.25, 0.5, 1.0), repeat=len(others)):
        for k, depth, nb in itertools.product((10, 30, 60), (20, 50), (0.0, 0.2)):
            label = f"{strong}=1 " + " ".join(f"{n}={w}" for n, w in zip(others, weights, strict=True)) + \
                    f" k={k} depth={depth} nb={nb}"
            variants[label] = {s: recall(lambda q, w=weights, k=k, d=depth, nb=nb: fuse(
                [(ranked[strong][q], 1.0)] + [(ranked[n][q], x) for n, x in zip(others, w, strict=True) if x],
                k, d, len(rows), nb), qs) for s, qs in sets.items()}
    # Score-level fusion: z-scored cosines and BM25 added with weights (the strong ranker at 1).
    for weights in itertools.product((0.0, 0.1, 0.25, 0.5), repeat=len(others)):
        label = f"z: {strong}=1 " + " ".join(f"{n}={w}" for n, w in zip(others, weights, strict=True))
        variants[label] = {s: recall(lambda q, w=weights: np.argsort(-(raw[strong][q] + sum(
            x * raw[n][q] for n, x in zip(others, w, strict=True) if x)), kind="stable").tolist(), qs)
            for s, qs in sets.items()}
    fusions = [v for v in variants if v not in ranked]
    best = sorted(fusions, key=lambda v: tuple(-sum(variants[v][s][m] for s in sets) for m in ("r@5", "r@1", "r@20")))
    out = {"command": " ".join(["python", "bench/kb_fusion.py", *sys.argv[1:]]), "chunks_searched": len(rows),
           "chunks": len(chunks), "questions": {s: len(q) for s, q in sets.items()}, "query_ms": query_ms,
           "alone": {n: variants[n] for n in ranked}, "best_fusions": {v: variants[v] for v in best[:15]},
           "all": {v: variants[v] for v in best}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for v in list(ranked) + best[:10]:
        print(f"{v:60s} " + "  ".join(f"{s}: " + "/".join(f"{variants[v][s][m]:.2f}" for m in ("r@1", "r@5", "r@20"))
                                      for s in sets))
    print(f"(r@1/r@5/r@20; {len(rows)} of {len(chunks)} chunks; questions {out['questions']}) wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
