"""A question's EmbeddingGemma embedding with torch's dynamic int8 on some linear layers: speed and cosine to fp32.

25 questions (15 红楼梦, 10 P&P of bench/data/retrieval_questions.json), one at a time, 2 threads; variants:
every layer per-tensor, every layer per-channel, per-channel without the MLP's down projection, the gate/up
projections only. Run: ``python bench/gemma_query_int8.py`` (prints; docs/knowledge_base.md, session 15).
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["ZHIYIN_EMBED_ONNX"] = "0"  # torch's int8 is what is measured
from knowledge_base.embedders import get_embedder  # noqa: E402


def main() -> int:
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    warnings.filterwarnings("ignore")  # torch.ao's deprecation notice, once per layer
    data = json.loads((REPO / "bench" / "data" / "retrieval_questions.json").read_text(encoding="utf-8"))
    qs = [q["q"] for q in data["hongloumeng"]][:15] + [q["q"] for q in data["pride_and_prejudice"]][:10]
    emb = get_embedder("embeddinggemma")
    ref = emb.embed(qs, query=True)
    original = emb._model

    def p50_ms() -> float:
        times = []
        for q in qs:
            t0 = time.perf_counter()
            emb.embed([q], query=True)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 1)

    print("fp32", p50_ms(), "ms")
    variants = {"per-tensor, all": (default_dynamic_qconfig, ()),
                "per-channel, all": (per_channel_dynamic_qconfig, ()),
                "per-channel, no down_proj": (per_channel_dynamic_qconfig, ("down_proj",)),
                "per-channel, gate/up only": (per_channel_dynamic_qconfig, ("down_proj", "self_attn"))}
    for name, (qconfig, skip) in variants.items():
        model = copy.deepcopy(original)
        spec = {n: qconfig for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and n.startswith("0.") and not any(s in n for s in skip)}
        emb._model = quantize_dynamic(model, spec, dtype=torch.qint8)  # the transformer only, not the dense head
        cos = (emb.embed(qs, query=True) * ref).sum(1)
        print(f"{name}: {p50_ms()} ms, cosine to fp32 min {cos.min():.4f} mean {cos.mean():.4f}", flush=True)
        emb._model = original
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
