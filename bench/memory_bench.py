"""Benchmark saved conversations and her memory of the reader.

- recall: bench/data/memory_scenarios.json (24 scenarios, 12 zh with 林黛玉, 12 en with Elizabeth). The
  reader tells a fact in one conversation; in a later conversation, after two unrelated turns, asks
  about it. Recall = her answer contains the fact (target 0.8); ``in_prompt`` = the fact reached the
  prompt at all (her memory's part, without the model's). Each language's facts are told by one reader
  (memories accumulate); another reader then asks the same questions: leaks = the fact in that reader's
  prompt (target 0) or answer (the model may also guess it: reported, judged by hand).
- ttft: the chat bench's role-play prompts as one conversation per character, with memory off and on
  (a reader who told her 12 facts): follow-up time to first token p50 (target: on within 10% of off), and
  the tokens llama.cpp evaluated.
- distill: the rule-based and the model distiller over every utterance of the set: facts found (recall)
  and memories made from turns that state none (false positives), ms per call.
- robustness: a 5,000-turn conversation opened (median of 3), two processes writing 200 turns each to
  one conversation, a damaged and a locked file.

Run: ``python bench/memory_bench.py [--size 1.5b] [--home DIR] [--max-tokens 64] [--distillers rules,model]``
(full, ~35 min on 2 idle cores); ``--smoke`` runs two scenarios, two turns a character and rules only on
the tiny random model in code (mechanics, ~2 min); ``--smoke --limit 12 --label memory-only`` runs every
scenario on the tiny model: its answers are noise, but what reaches the prompt (``in_prompt``, leaks) is
the memory's own work. Writes bench/results/memory.json (by label).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fileio import write_text_atomic  # noqa: E402  (after the repo is on sys.path)

DATA = REPO / "bench" / "data"
RESULTS = REPO / "bench" / "results" / "memory.json"
TARGETS = {"recall": 0.8, "leak_prompt": 0, "ttft_followup_ratio_max": 1.10, "open_5000_s": 1.0}
READERS = {"daiyu": "bench-读者", "elizabeth": "bench-reader"}
OTHER = "bench-other"


def p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def hit(text: str, expect: list[str]) -> bool:
    return any(e.lower() in text.lower() for e in expect)


# ------------------------------------------------------------------------ recall
def run_recall(scenarios: list[dict], model, store, settings, meter) -> dict:
    from conversations import open_or_create

    rows = []
    for s in scenarios:  # the reader tells, in a conversation of its own
        conv = open_or_create(s["character"], READERS[s["character"]], "roleplay", llm=model, settings=settings,
                              store=store)
        list(conv.turn(s["tell"]))
    for s in scenarios:  # later: unrelated turns, then the question
        conv = open_or_create(s["character"], READERS[s["character"]], "roleplay", llm=model, settings=settings,
                              store=store)
        for text in s["filler"]:
            list(conv.turn(text))
        done = list(conv.turn(s["ask"]))[-1]
        prompts = "\n".join(t.prompt for t in conv.companion.history)
        # The memories that hold this fact (exact texts, so a passage of the book never counts as one).
        facts = [m.text for m in store.memories(READERS[s["character"]], s["character"]) if hit(m.text, s["expect"])]
        other = open_or_create(s["character"], OTHER, "roleplay", llm=model, settings=settings, store=store)
        leak = list(other.turn(s["ask"]))[-1]
        row = {"id": s["id"], "answer": done.answer, "recall": hit(done.answer, s["expect"]),
               "remembered": facts, "in_prompt": any(f in prompts for f in facts),
               "memory_tokens_at_ask": done.tokens.get("memory", 0),
               "leak_prompt": any(f in other.companion.history[-1].prompt for f in facts),
               "leak_answer": hit(leak.answer, s["expect"]), "other_answer": leak.answer}
        rows.append(row)
        print(f"recall {'✓' if row['recall'] else '✗'} prompt {'✓' if row['in_prompt'] else '✗'} "
              f"{s['id']}: {done.answer[:60]!r}", file=sys.stderr)

    def share(key: str, lang: str | None = None) -> float:
        picked = [r for r in rows if lang is None or r["id"].startswith(lang)]
        return round(sum(r[key] for r in picked) / max(1, len(picked)), 3)

    return {"n": len(rows), "recall": share("recall"), "recall_zh": share("recall", "zh"),
            "recall_en": share("recall", "en"), "in_prompt": share("in_prompt"),
            "leak_prompt": sum(r["leak_prompt"] for r in rows), "leak_answer": sum(r["leak_answer"] for r in rows),
            "memories": {c: len(store.memories(r, c)) for c, r in READERS.items()}, "rows": rows}


# -------------------------------------------------------------------------- ttft
def run_ttft(prompts: dict[str, list[str]], model, store, settings, meter) -> dict:
    from dataclasses import replace

    from conversations import open_or_create

    out: dict = {}
    for memory in (False, True):
        follow, evaluated, memory_tokens = [], [], []
        for cid, lines in prompts.items():
            conv = open_or_create(cid, READERS[cid], "roleplay", llm=model, store=store,
                                  settings=replace(settings, memory=memory))
            for n, text in enumerate(lines):
                meter.last = {}
                done = list(conv.turn(text))[-1]
                if n:
                    follow.append(done.timings["first_token_ms"] / 1000)
                    evaluated.append(int(meter.last.get("prompt_n", 0)))
                    memory_tokens.append(done.tokens.get("memory", 0))
        out["on" if memory else "off"] = {
            "ttft_followup_p50_s": p50(follow), "evaluated_tokens_followup_p50": p50(evaluated),
            "memory_tokens_followup_p50": p50(memory_tokens),
            "followups_with_memory": sum(1 for t in memory_tokens if t), "n_followups": len(follow)}
        print(f"ttft memory {'on' if memory else 'off'}: {out['on' if memory else 'off']}", file=sys.stderr)
    off, on = out["off"]["ttft_followup_p50_s"], out["on"]["ttft_followup_p50_s"]
    out["ratio"] = round(on / off, 3) if off and on else None
    return out


# ------------------------------------------------------------------------ distill
def run_distill(scenarios: list[dict], names: list[str], model, smoke: bool) -> dict:
    """Each distiller on the scenarios (the set the rules were written against) and on held-out utterances."""
    from conversations.memory import DISTILLERS

    held = json.loads((DATA / "memory_heldout.json").read_text(encoding="utf-8"))
    sets = {
        "scenarios": ([(s["tell"], s["expect"], s["id"][:2]) for s in scenarios],
                      [(t, s["id"][:2]) for s in scenarios for t in [*s["filler"], s["ask"]]]),
        "heldout": ([(f["text"], [f["key"]], f["lang"]) for f in held["facts"]],
                    [(p["text"], p["lang"]) for p in held["plain"]]),
    }
    if smoke:
        sets = {k: (told[:2], plain[:2]) for k, (told, plain) in sets.items()}
    out: dict = {}
    for name in names:
        distil = DISTILLERS.create(name)
        for label, (told, plain) in sets.items():
            t0 = time.perf_counter()
            made = [[f.text for f in distil(t, llm=model, lang=lang)] for t, _, lang in told]
            found = [hit(" ".join(m), e) for m, (_, e, _) in zip(made, told, strict=True)]
            false = [(t, m) for t, lang in plain if (m := [f.text for f in distil(t, llm=model, lang=lang)])]
            out[f"{name}/{label}"] = {
                "facts_found": round(sum(found) / len(told), 3), "n_facts": len(told),
                "false_positive_turns": len(false), "n_plain_turns": len(plain),
                "missed": [t for (t, _, _), ok in zip(told, found, strict=True) if not ok],
                "false_examples": false[:5], "ms_per_call": round((time.perf_counter() - t0) * 1000 /
                                                                   (len(told) + len(plain)), 1)}
            print(f"distill {name}/{label}: {out[f'{name}/{label}']}", file=sys.stderr)
    return out


# --------------------------------------------------------------------- robustness
def run_robustness(home: Path) -> dict:
    from conversations import ConversationError, ConversationStore, open_or_create

    path = home / "robust.db"
    store = ConversationStore(path)
    cid = store.create("daiyu", "bench-long", "reader", "long")
    with sqlite3.connect(path) as con:
        parent = None
        for i in range(5000):
            for role, text in (("user", f"问题{i}：宝玉今天来过吗？"), ("assistant", f"回答{i}：来过了，坐了一会儿就走了。")):
                parent = con.execute("INSERT INTO messages (conversation_id, parent_id, role, content, prompt, mode, "
                                     "created_at) VALUES (?, ?, ?, ?, ?, 'reader', '2025')",
                                     (cid, parent, role, text, text if role == "assistant" else None)).lastrowid
        con.execute("UPDATE conversations SET head_id = ? WHERE id = ?", (parent, cid))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        conv = open_or_create("daiyu", "bench-long", conversation_id=cid, store=store, llm=object())
        conv.shown()
        times.append(time.perf_counter() - t0)
    two = store.create("daiyu", "bench-two", "reader")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom conversations import ConversationStore\n"
            "db = ConversationStore(sys.argv[2])\nfor i in range(200):\n"
            "    q = db.add_message(int(sys.argv[3]), None, 'user', sys.argv[4] + str(i), mode='reader')\n"
            "    db.add_message(int(sys.argv[3]), q, 'assistant', 'x', mode='reader')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(REPO), str(path), str(two), tag]) for tag in "ab"]
    codes = [p.wait() for p in procs]
    written = sum(1 for m in store.messages(two).values() if m.role == "user")
    bad = home / "damaged.db"
    bad.write_bytes(b"not a database " * 100)
    try:
        ConversationStore(bad)
        damaged = "opened?!"
    except ConversationError as exc:
        damaged = str(exc)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        ConversationStore(path, timeout=0.5).add_message(cid, None, "user", "x", mode="reader")
        locked = "written?!"
    except ConversationError as exc:
        locked = str(exc)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    return {"open_5000_turns_s": p50(times), "open_times_s": [round(t, 3) for t in times],
            "two_writers_exit": codes, "two_writers_questions": written, "two_writers_expected": 400,
            "damaged": damaged, "damaged_untouched": bad.read_bytes() == b"not a database " * 100, "locked": locked}


# -------------------------------------------------------------------------- setup
def smoke_setup(home: Path):
    """Small real stores (the bundled notes) and the tiny random Qwen2 built in code: mechanics only."""
    os.environ["ZHIYIN_HOME"] = str(home)
    import llm
    from knowledge_base.builder import build
    from settings import load_settings
    from tests.tiny_model import build_tiny_qwen

    for cid in READERS:
        build(cid, embedder="use")
    folder = build_tiny_qwen(home / "tiny-qwen")
    settings = load_settings(llm_backend="transformers", llm_model=str(folder), threads=2, max_tokens=8)
    return llm.get_chat_model(settings), settings


def full_setup(args: argparse.Namespace, meter):
    from bench.chat_bench import ensure_stores

    ensure_stores(args.home)
    import llm
    from settings import load_settings

    settings = load_settings(llm_model=llm.SIZES[args.size], threads=args.threads, max_tokens=args.max_tokens)
    model = llm.get_chat_model(settings, callbacks=[meter.handler], seed=args.seed)
    model.server  # noqa: B018  (load the weights before the first timing)
    return model, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "zhiyin-bench",
                        help="ZHIYIN_HOME with the full-novel stores (shared with chat_bench; built if missing)")
    parser.add_argument("--distillers", default="rules,model")
    parser.add_argument("--only", default="recall,ttft,distill,robustness")
    parser.add_argument("--smoke", action="store_true", help="two scenarios on the tiny model: mechanics only")
    parser.add_argument("--label", help="the name of this run in the results (default: smoke or full)")
    parser.add_argument("--limit", type=int, help="only the first N scenarios of each language")
    args = parser.parse_args()
    from bench.chat_bench import Meter

    scenarios = json.loads((DATA / "memory_scenarios.json").read_text(encoding="utf-8"))["scenarios"]
    prompts = {k: v for k, v in json.loads((DATA / "roleplay_prompts.json").read_text(encoding="utf-8")).items()
               if not k.startswith("_")}
    meter = Meter()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="zhiyin-memory-bench-") as tmp:
        limit = args.limit or (1 if args.smoke else None)  # the smoke: one scenario a language unless told
        if limit:
            scenarios = [s for lang in ("zh", "en") for s in [x for x in scenarios if x["id"][:2] == lang][:limit]]
        if args.smoke:
            prompts = {k: v[:2] for k, v in prompts.items()}
            args.distillers = "rules"
            model, settings = smoke_setup(Path(tmp))
        else:
            model, settings = full_setup(args, meter)
        from conversations import ConversationStore

        store = ConversationStore(Path(tmp) / "memory-bench.db")  # a fresh file: nobody's memories but the bench's
        load = [round(x, 2) for x in os.getloadavg()]
        row: dict = {"label": args.label or ("smoke" if args.smoke else "full"), "size": "tiny" if args.smoke else args.size,
                     "load_average_before": load, "max_tokens": args.max_tokens, "seed": args.seed}
        if "distill" in only:
            row["distill"] = run_distill(scenarios, args.distillers.split(","), model, args.smoke)
        if "recall" in only:
            row["recall"] = run_recall(scenarios, model, store, settings, meter)
        if "ttft" in only:
            row["ttft"] = run_ttft(prompts, model, store, settings, meter)
        if "robustness" in only:
            row["robustness"] = run_robustness(Path(tmp))
    kept = []
    if RESULTS.is_file():
        kept = [r for r in json.loads(RESULTS.read_text(encoding="utf-8")).get("results", [])
                if r.get("label") != row["label"]]
    payload = {"command": "python bench/memory_bench.py " + " ".join(sys.argv[1:]), "targets": TARGETS,
               "cpu_count": os.cpu_count(), "results": [*kept, row]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS, json.dumps(payload, ensure_ascii=False, indent=1))
    summary = {k: {kk: vv for kk, vv in v.items() if kk not in ("rows",)} if isinstance(v, dict) else v
               for k, v in row.items()}
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    print(f"wrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
