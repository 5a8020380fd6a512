"""Would Whisper's other beam hypotheses, re-ranked by the book's model, hear the book's names better?

    python bench/asr_nbest.py [--stores /tmp/zhiyin-bench/stores] [--hypotheses 5]

The Chinese name-dense sentences of bench/asr_bench.py (its spoken takes, from the same audio cache),
primed as the page primes them (``turn``). Whisper base's beam search (5) returns its best ``--hypotheses``
instead of one (CTranslate2's ``num_hypotheses``; the first is what the app hears today). Each is
corrected as ``voice.priming.listen`` corrects (names, book words, the book's model), then chosen by
Whisper's length-normalised score + λ × the book model's mean log-probability per character, switching
from the first only when the winner leads by ``margin``. Reported: today's CER (the first hypothesis),
the oracle (the best of the N for every take) and each (λ, margin), per set and over all; writes
bench/results/asr_nbest.json. Session 16's result is in docs/voice.md (not kept: the gain was small
and came and went between sets).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import asr_bench as ab  # noqa: E402  (its sets, audio cache, contexts and scoring)
import jiwer  # noqa: E402

from characters import load_card  # noqa: E402
from fileio import write_text_atomic  # noqa: E402
from voice import asr  # noqa: E402
from voice.asr import zh_text  # noqa: E402
from voice.correction import _CJK_RUN, correct  # noqa: E402

SETS = ("zh", "zh-new", "zh-held", "zh-held2", "zh-held3")
GRID = [(lam, margin) for lam in (0.1, 0.2, 0.3, 0.5) for margin in (0.0, 0.1, 0.2)]


class NBest:
    """Stands in for faster-whisper's CTranslate2 model: asks its beam search for ``n`` hypotheses and keeps
    them (faster-whisper itself reads only the first, so what it returns is unchanged)."""

    def __init__(self, model: Any, tokenizer: Any, n: int) -> None:
        self.model, self.tokenizer, self.n, self.last = model, tokenizer, n, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("beam_size", 1) > 1:
            kwargs["num_hypotheses"] = self.n
        result = self.model.generate(*args, **kwargs)
        self.last = [(zh_text(self.tokenizer.decode(ids).strip()), score)
                     for ids, score in zip(result[0].sequences_ids, result[0].scores, strict=True)]
        return result


def lm_per_char(lm: Any, text: str) -> float:
    """The book model's mean log-probability of the text's Chinese characters."""
    total, n = 0.0, 0
    for run in _CJK_RUN.findall(text):
        history = "^^"
        for char in run:
            total += lm._logp(history, char)
            history, n = (history + char)[-2:], n + 1
    return total / max(n, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, default=Path("/tmp/zhiyin-bench/stores"))
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--hypotheses", type=int, default=5)
    parser.add_argument("--audio-cache", type=Path, default=Path("/tmp/zhiyin-asr-bench-audio"))
    args = parser.parse_args()
    card = load_card("daiyu")
    store = args.stores / card.id
    if not store.is_dir():
        print(f"error: no store of '{card.id}' at {store}; run bench/turn_bench.py first or pass --stores", file=sys.stderr)
        return 2
    data = json.loads(ab.SENTENCES.read_text(encoding="utf-8"))
    words = ab.book_words(card, store)
    engine = asr.get_asr("faster-whisper")
    wrapper = NBest(engine.model.model, engine.model.hf_tokenizer, args.hypotheses)
    engine.model.model = wrapper
    # per set, per sentence, per take: [(whisper score, book model per char, CER)] of each hypothesis, corrected
    scored: dict[str, list[list[list[tuple[float, float, float]]]]] = {}
    for name in SETS:
        scored[name] = []
        for item in data[name]:
            ref = ab.norm(item["text"], "zh")
            ctx, terms = ab.context_for("turn", card, store, item.get("last_turn", ""))
            takes = []
            for clip in ab.takes(item["text"], "zh", args.takes, args.audio_cache):
                engine.transcribe(clip, "zh", context=ctx)
                hyps = []
                for text, score in wrapper.last:
                    fixed = correct(text, terms, "zh", words)
                    hyps.append((score, lm_per_char(words.lm, fixed), jiwer.cer(ref, ab.norm(fixed, "zh") or "-")))
                takes.append(hyps)
            scored[name].append(takes)
        print(f"{name}: {len(data[name])} sentences", file=sys.stderr)

    def cer(choose: Any) -> dict[str, float]:
        out = {}
        for name, rows in scored.items():  # as asr_bench: a sentence's median take, the mean over sentences
            out[name] = round(statistics.mean(sorted(choose(h) for h in takes)[len(takes) // 2] for takes in rows), 4)
        sizes = {n: len(r) for n, r in scored.items()}
        out["all"] = round(sum(out[n] * sizes[n] for n in sizes) / sum(sizes.values()), 4)
        return out

    def rerank(lam: float, margin: float) -> Any:
        def choose(hyps: list[tuple[float, float, float]]) -> float:
            value = [s + lam * lm for s, lm, _ in hyps]
            best = max(range(len(hyps)), key=value.__getitem__)
            return hyps[best][2] if value[best] > value[0] + margin else hyps[0][2]
        return choose

    result = {"command": "python bench/asr_nbest.py " + " ".join(sys.argv[1:]), "hypotheses": args.hypotheses,
              "today": cer(lambda h: h[0][2]), "oracle": cer(lambda h: min(x[2] for x in h)),
              "reranked": [{"lambda": lam, "margin": margin, "cer": cer(rerank(lam, margin))} for lam, margin in GRID]}
    write_text_atomic(HERE / "results" / "asr_nbest.json", json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "reranked"}, indent=1))
    for r in result["reranked"]:
        print(f"lambda {r['lambda']} margin {r['margin']}: {r['cer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
