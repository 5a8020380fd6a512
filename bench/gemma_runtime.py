"""EmbeddingGemma in torch (fp32, eager) against ONNX Runtime: a question's time, passages a second, cosine.

    python -m knowledge_base.gemma prepare                       # assembles and exports the ONNX model
    python bench/kb_bench.py --upgrade --upgrade-to embeddinggemma --home DIR   # or any home with a built store
    python bench/gemma_runtime.py --home DIR [--store bench-hlm] [--passages 96]

Questions: the first 15 红楼梦 and 10 P&P questions of bench/data/retrieval_questions.json, one at a time, each
timed under both runtimes in turn. Passages: spread over the store's book, longest first in batches of 4 with
their windows pooled (as the upgrade embeds them), each batch timed under both in turn, so a busy moment of
the machine falls on both. Writes bench/results/gemma_runtime.json. Run it alone.
"""
from __future__ import annotations

import argparse
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
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", required=True, help="a ZHIYIN_HOME with a built store")
    p.add_argument("--store", default="bench-hlm", help="the store's character id (kb_bench.py's 红楼梦: bench-hlm)")
    p.add_argument("--passages", type=int, default=96)
    p.add_argument("--out", type=Path, default=HERE / "results" / "gemma_runtime.json")
    args = p.parse_args()
    os.environ["ZHIYIN_HOME"] = args.home

    import numpy as np

    import cpu
    from gemma_attention import sample_passages
    from knowledge_base import gemma, gemma_onnx
    from knowledge_base.embedders import QUESTION_PROMPT, OnnxEmbedder, SentenceTransformerEmbedder

    folder = gemma.require()
    onnx_path = gemma_onnx.exported(folder)
    if onnx_path is None:
        print(f"error: EmbeddingGemma is not exported to ONNX; run `{gemma.PREPARE}`")
        return 2
    runtimes = {"torch": SentenceTransformerEmbedder(folder, name="embeddinggemma", attention="eager"),
                "onnx": OnnxEmbedder(folder, onnx_path, "embeddinggemma")}
    for emb in runtimes.values():
        emb.query_prompt, emb.batch = QUESTION_PROMPT, 4
    try:
        texts, spans = sample_passages(runtimes["onnx"], args.store, args.passages)
    except LookupError as exc:
        print(f"error: {exc}")
        return 2
    data = json.loads((HERE / "data" / "retrieval_questions.json").read_text(encoding="utf-8"))
    questions = [q["q"] for q in data["hongloumeng"]][:15] + [q["q"] for q in data["pride_and_prejudice"]][:10]

    def interleaved(calls: list[tuple[str, object]]) -> tuple[dict[str, list[float]], dict[str, list[np.ndarray]]]:
        times: dict[str, list[float]] = {n: [] for n in runtimes}
        out: dict[str, list[np.ndarray]] = {n: [] for n in runtimes}
        for k, (kind, arg) in enumerate(calls):
            for name in list(runtimes) if k % 2 == 0 else list(runtimes)[::-1]:
                emb = runtimes[name]
                t0 = time.perf_counter()
                vec = emb.embed([arg], query=True) if kind == "q" else emb.embed_spans(*arg)[0]  # type: ignore[misc]
                times[name].append(time.perf_counter() - t0)
                out[name].append(vec)
        return times, out

    for emb in runtimes.values():  # warm: the first run of each allocates
        emb.embed(questions[:1], query=True)
        emb.embed_spans(texts[:4], spans[:4])
    q_times, q_vecs = interleaved([("q", q) for q in questions])
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    p_times, p_vecs = interleaved([("p", ([texts[i] for i in b], [spans[i] for i in b])) for b in batches])
    cos = [(np.concatenate(a) * np.concatenate(b)).sum(1) for a, b in ((q_vecs["torch"], q_vecs["onnx"]),
                                                                       (p_vecs["torch"], p_vecs["onnx"]))]
    result = {"command": " ".join(["python", "bench/gemma_runtime.py", *sys.argv[1:]]),
              "cpu_bf16": cpu.native_bf16(), "questions": len(questions), "passages": len(texts),
              **{f"{n}_question_p50_ms": round(statistics.median(t) * 1000, 1) for n, t in q_times.items()},
              **{f"{n}_passages_per_s": round(len(texts) / sum(t), 2) for n, t in p_times.items()},
              "min_cosine_questions": round(float(cos[0].min()), 5), "min_cosine_passages": round(float(cos[1].min()), 5),
              "load_average": round(os.getloadavg()[0], 2)}
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
