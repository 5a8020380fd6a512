"""Benchmark persona fine-tuning: lines extracted per character and their hand-checked precision,
CPU LoRA training speed on the packaged Qwen2.5-Coder-0.5B, held-out loss before and after a short run.

    python bench/finetune_bench.py [--steps 8] [--batch-size 2] [--max-len 256]

Prints a table and writes bench/results/finetune.json. The adapter of the short run goes to a
temporary ZHIYIN_HOME, so the repository's checkpoints/adapters stay untouched.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
NOVELS = [("daiyu", "hongloumeng.txt"), ("elizabeth", "pride_and_prejudice.txt")]


def extraction() -> list[dict]:
    """Count each character's lines and score today's sample against the recorded hand verdicts."""
    import characters
    from finetune.extract import dedupe, extract_lines, read_text, sample_for_review

    rows = []
    for cid, book in NOVELS:
        t0 = time.time()
        text, _ = read_text(CORPUS / book)
        lines = dedupe(extract_lines(text, characters.load_card(cid).names, book))
        seconds = time.time() - t0
        verdicts = json.loads((REPO / "bench" / "data" / f"attribution_{book.split('.')[0]}.json").read_text(encoding="utf-8"))
        by_offset = {i["offset"]: i["correct"] for i in verdicts["items"]}
        sample = sample_for_review(lines, 50, 0)
        checked = [by_offset[x.offset] for x in sample if x.offset in by_offset]
        rows.append({"character": cid, "novel": book, "lines": len(lines), "seconds": round(seconds, 2),
                     "sample": len(sample), "checked": len(checked), "correct": sum(checked),
                     "precision": round(sum(checked) / len(checked), 3) if checked else None})
    return rows, lines


def training(steps: int, batch_size: int, max_len: int) -> dict:
    """A short CPU LoRA run on Lin Daiyu's lines; returns speed and held-out loss before/after."""
    import characters
    from finetune.extract import FORMATS, dedupe, extract_lines, read_text
    from finetune.train import TrainConfig, train

    text, _ = read_text(CORPUS / "hongloumeng.txt")
    card = characters.load_card("daiyu")
    lines = dedupe(extract_lines(text, card.names, "hongloumeng.txt"))
    with tempfile.TemporaryDirectory() as home:
        os.environ["ZHIYIN_MODELS"] = os.environ.get("ZHIYIN_MODELS") or str(REPO / "checkpoints")
        os.environ["ZHIYIN_HOME"] = home
        data = Path(home) / "daiyu.jsonl"
        fmt = FORMATS.create("xtuner")
        data.write_text("\n".join(json.dumps(fmt.record(x, card.persona), ensure_ascii=False) for x in lines),
                        encoding="utf-8")
        t0 = time.time()
        result = train("daiyu", data, base="", progress=True,
                       config=TrainConfig(steps=steps, batch_size=batch_size, max_len=max_len, eval_samples=8))
        m = result.manifest
    return {"base": m["base_model"], "mode": m["mode"], "steps": steps, "batch_size": batch_size, "max_len": max_len,
            "rank": m["hyperparameters"]["rank"], "train_seconds": m["train_seconds"],
            "samples_per_second": m["samples_per_second"], "total_seconds": round(time.time() - t0, 1),
            "eval_lines": m["samples"]["eval"], "loss_before": m["eval"]["before"]["loss"],
            "loss_after": m["eval"]["after"]["loss"], "ppl_before": m["eval"]["before"]["perplexity"],
            "ppl_after": m["eval"]["after"]["perplexity"], "loss_curve": m["loss_curve"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    import torch

    rows, _ = extraction()
    print(f"{'character':<10} {'novel':<26} {'lines':>6} {'s':>6} {'checked':>8} {'precision':>9}")
    for r in rows:
        print(f"{r['character']:<10} {r['novel']:<26} {r['lines']:>6} {r['seconds']:>6} "
              f"{r['correct']}/{r['checked']:<6} {r['precision']!s:>9}")
    result: dict = {"extraction": rows, "machine": {"threads": torch.get_num_threads(), "cpus": os.cpu_count()}}
    if not args.skip_train:
        t = training(args.steps, args.batch_size, args.max_len)
        result["training"] = t
        print(f"\nLoRA r={t['rank']} on {t['base']} ({t['mode']}), {t['steps']} steps x batch {t['batch_size']}, "
              f"max_len {t['max_len']}")
        print(f"  speed: {t['samples_per_second']} samples/s ({t['train_seconds']} s training, {t['total_seconds']} s total)")
        print(f"  held-out loss ({t['eval_lines']} lines): {t['loss_before']} -> {t['loss_after']} "
              f"(perplexity {t['ppl_before']} -> {t['ppl_after']})")
    out = REPO / "bench" / "results" / "finetune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
