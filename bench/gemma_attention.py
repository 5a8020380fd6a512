"""EmbeddingGemma's passage speed with eager against sdpa attention, on 2 cores (why the embedder runs eager).

    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # or any home with a built store
    python bench/gemma_attention.py --home DIR [--store bench-hlm] [--passages 96]

Takes passages spread over the store's book, longest first in the embedder's own batches (as the upgrade
does, windows pooled too), and times each batch under both attention implementations in turn, in one
process, so a busy moment of the machine falls on both. Prints passages per second for each and the lowest
cosine between their vectors. Run it alone: another job on the 2 cores swamps the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))


def sample_passages(emb, store: str, n: int) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """``n`` passages spread over the store's book, as ``emb`` embeds them (document prompt, chapter title),
    with their windows' character spans: what the upgrade embeds. The store is read from ZHIYIN_HOME."""
    from knowledge_base.embedders import passage_inputs
    from knowledge_base.store import current_version, read_chunks, store_root
    from knowledge_base.windows import window_spans

    version = current_version(store_root(store))
    if version is None:
        raise LookupError(f"no store '{store}' in {os.environ.get('ZHIYIN_HOME')}; build one with "
                          "bench/kb_bench.py --home DIR")
    chunks = read_chunks(version)
    chunks = chunks[:: max(1, len(chunks) // n)][:n]
    texts = passage_inputs(emb, chunks)
    return texts, [[(s + len(t) - len(c["text"]), e + len(t) - len(c["text"])) for s, e in window_spans(c["text"])]
                   for t, c in zip(texts, chunks, strict=True)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", required=True, help="a ZHIYIN_HOME with a built store")
    p.add_argument("--store", default="bench-hlm", help="the store's character id (kb_bench.py's 红楼梦: bench-hlm)")
    p.add_argument("--passages", type=int, default=96)
    args = p.parse_args()
    os.environ["ZHIYIN_HOME"] = args.home
    os.environ["ZHIYIN_EMBED_ONNX"] = "0"  # torch's attention implementations are what is compared

    import numpy as np

    from knowledge_base.embedders import get_embedder

    emb = get_embedder("embeddinggemma")
    try:
        texts, spans = sample_passages(emb, args.store, args.passages)
    except LookupError as exc:
        print(f"error: {exc}")
        return 2
    model = emb._model[0].auto_model
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    emb.embed_spans(texts[:4], spans[:4])  # warm
    seconds = {"sdpa": 0.0, "eager": 0.0}
    vectors: dict[str, list[np.ndarray]] = {"sdpa": [], "eager": []}
    for n, i in enumerate(range(0, len(order), emb.batch)):
        part = order[i:i + emb.batch]
        for mode in ("sdpa", "eager") if n % 2 == 0 else ("eager", "sdpa"):
            model.config._attn_implementation = mode
            t0 = time.perf_counter()
            vecs, _ = emb.embed_spans([texts[k] for k in part], [spans[k] for k in part])
            seconds[mode] += time.perf_counter() - t0
            vectors[mode].append(vecs)
    a, b = np.concatenate(vectors["sdpa"]), np.concatenate(vectors["eager"])
    print(json.dumps({"passages": len(texts), **{f"{m}_passages_per_s": round(len(texts) / s, 2)
                                                 for m, s in seconds.items()},
                      "min_cosine": round(float((a * b).sum(1).min()), 5)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
