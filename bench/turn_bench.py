"""Benchmark whole turns through pipeline.py: first token, first audio, first video clip, end.

On a prepared install (the model assembled, the full-novel stores built, her prompt heads' states
saved as ``start.py --prepare-only`` does), for each built-in character and mode:

- first answers: a new conversation's first question (the slot holds another character's
  conversation before each, as on a page that was used), speech on;
- follow-ups: the next question of the same conversation;
- with video: one reader first answer and one follow-up per character with the talking head on.

Also measured once: how long loading the model and preparing the heads take from cold.
Run: ``python bench/turn_bench.py [--home DIR] [--smoke]``; writes bench/results/turn.json.
Targets (issue 14): first token of a first answer <= 4 s p50 in role-play and <= 8 s in reader
mode, follow-ups <= 2.5 s p50.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from chat_bench import ensure_stores  # noqa: E402  (the same full-novel stores)

from fileio import write_text_atomic  # noqa: E402

RESULTS = REPO / "bench" / "results" / "turn.json"
DATA = REPO / "bench" / "data"
TARGETS = {"first_roleplay_p50_s": 4.0, "first_reader_p50_s": 8.0, "followup_p50_s": 2.5}


def questions() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(character, mode) -> [(first question, follow-up)]."""
    reader_zh = [q["q"] for q in json.loads((DATA / "chat_questions.json").read_text(encoding="utf-8"))["daiyu"]]
    reader_en = [q["q"] for q in json.loads((DATA / "retrieval_questions.json").read_text(encoding="utf-8"))
                 ["pride_and_prejudice"]]
    role = json.loads((DATA / "roleplay_prompts.json").read_text(encoding="utf-8"))
    return {
        ("daiyu", "reader"): list(zip(reader_zh[0:6:2], reader_zh[1:7:2], strict=True)),
        ("daiyu", "roleplay"): list(zip(role["daiyu"][0:6:2], role["daiyu"][1:7:2], strict=True)),
        ("elizabeth", "reader"): list(zip(reader_en[0:6:2], reader_en[1:7:2], strict=True)),
        ("elizabeth", "roleplay"): list(zip(role["elizabeth"][0:6:2], role["elizabeth"][1:7:2], strict=True)),
    }


def run_turn(pipe, text: str) -> dict:
    from events import Done, StageError

    errors = []
    done = None
    for event in pipe.turn(text):
        if isinstance(event, StageError):
            errors.append(f"{event.stage}: {event.error}")
        elif isinstance(event, Done):
            done = event
    t = done.timings
    return {"q": text, "answer": done.answer, "first_token_s": t["first_token_ms"] / 1000,
            "first_shown_s": t.get("first_shown_ms", t["first_token_ms"]) / 1000,
            "first_audio_s": t.get("first_audio_ms", 0) / 1000 or None,
            "first_video_s": t.get("first_video_ms", 0) / 1000 or None, "end_s": t["end_ms"] / 1000,
            "retrieve_s": t.get("retrieve_ms", 0) / 1000, "tokens": done.tokens, "errors": errors}


def p50(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/zhiyin-bench"))
    ap.add_argument("--smoke", action="store_true", help="one question per character and mode, no video")
    args = ap.parse_args()
    stores = ensure_stores(args.home)
    os.environ["ZHIYIN_HOME"] = str(args.home)

    import llm
    from pipeline import build_pipeline
    from prompting import MODES
    from ragchat import Companion
    from settings import load_settings

    settings = load_settings(tts_engine="auto")  # the defaults a user gets (offline voices)
    llm.prepare_default_model()
    t0 = time.perf_counter()
    model = llm.get_chat_model(settings)
    _ = model.server  # the weights load here
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    made = sum(Companion(c, mode=m, llm=model, settings=settings).prepare_prefix()
               for c in ("daiyu", "elizabeth") for m in MODES.names())
    for c in ("daiyu", "elizabeth"):  # as the page's warm-up does: her book's words, before her first question
        Companion(c, mode="roleplay", llm=model, settings=settings).warm()
    prepare_s = time.perf_counter() - t0

    rows: dict[str, list[dict]] = {"first": [], "followup": [], "video_first": [], "video_followup": []}
    plan = questions()
    n = 1 if args.smoke else 3
    for i in range(n):
        for (cid, mode), pairs in plan.items():
            first, follow = pairs[i]
            pipe = build_pipeline(cid, mode, settings, llm=model, speak=True)
            for kind, q in (("first", first), ("followup", follow)):
                row = run_turn(pipe, q) | {"character": cid, "mode": mode}
                rows[kind].append(row)
                print(f"{cid}/{mode} {kind}: {row['first_token_s']:.2f} s first token, "
                      f"{row['first_shown_s']:.2f} s shown, {row['first_audio_s'] or 0:.2f} s first audio, {row['end_s']:.1f} s end", file=sys.stderr)
    if not args.smoke:
        for cid in ("daiyu", "elizabeth"):
            first, follow = plan[(cid, "reader")][0]
            pipe = build_pipeline(cid, "reader", settings, llm=model, speak=True, video=True)
            for kind, q in (("video_first", first), ("video_followup", follow)):
                row = run_turn(pipe, q) | {"character": cid, "mode": "reader"}
                rows[kind].append(row)
                print(f"{cid} video {kind}: first clip {row['first_video_s']}", file=sys.stderr)

    def by(kind: str, mode: str | None = None) -> list[dict]:
        return [r for r in rows[kind] if mode is None or r["mode"] == mode]

    summary = {
        "model_load_s": round(load_s, 2), "heads_prepared_now": made, "prepare_heads_s": round(prepare_s, 1),
        "first_roleplay_p50_s": p50(by("first", "roleplay"), "first_token_s"),
        "first_reader_p50_s": p50(by("first", "reader"), "first_token_s"),
        # What the reader sees first: in role-play the guard shows whole sentences only.
        "shown_first_roleplay_p50_s": p50(by("first", "roleplay"), "first_shown_s"),
        "shown_first_reader_p50_s": p50(by("first", "reader"), "first_shown_s"),
        "shown_followup_p50_s": p50(by("followup"), "first_shown_s"),
        "followup_p50_s": p50(by("followup"), "first_token_s"),
        "followup_roleplay_p50_s": p50(by("followup", "roleplay"), "first_token_s"),
        "followup_reader_p50_s": p50(by("followup", "reader"), "first_token_s"),
        "first_audio_first_p50_s": p50(by("first"), "first_audio_s"),
        "first_audio_followup_p50_s": p50(by("followup"), "first_audio_s"),
        "end_first_p50_s": p50(by("first"), "end_s"),
        "video_first_clip_p50_s": p50(rows["video_first"] + rows["video_followup"], "first_video_s"),
        "video_end_p50_s": p50(rows["video_first"] + rows["video_followup"], "end_s"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    result = {"summary": summary, "targets": TARGETS, "stores": stores, "smoke": args.smoke, "rows": rows}
    if not args.smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(RESULTS, json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
