"""Benchmark the retrieval chain end to end: latency, prompt sizes, reader accuracy, role-play.

Over full-novel stores built like the bundled characters (``daiyu`` with Dream of the Red
Chamber, ``elizabeth`` with Pride and Prejudice, in a bench ZHIYIN_HOME, reused if present),
for each packaged model size in its own process (so peak RSS is that model's):

- reader accuracy: each question of bench/data/chat_questions.json in a fresh reader
  conversation with 林黛玉; correct if the answer contains one of the accepted strings;
- role-play: bench/data/roleplay_prompts.json as one conversation per character; share of
  answers in the first person and share breaking character (rules in ``judge_roleplay``);
- latency: time to first token of first turns (the reader questions and the first role-play
  turn) and of follow-up turns (the other role-play turns), llama.cpp's evaluated vs cached
  prompt tokens, generation tok/s, peak RSS, and the chain's token estimate per prompt part.

Run: ``python bench/chat_bench.py [--sizes 1.5b,0.5b] [--threads 2] [--quick] [--home DIR]``.
Writes bench/results/chat.json (sizes not re-run are kept) and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fileio import write_text_atomic  # noqa: E402  (after the repo is on sys.path)

CORPUS = REPO.parent / "shared" / "corpus"
DATA = REPO / "bench" / "data"
RESULTS = REPO / "bench" / "results" / "chat.json"
BOOKS = {"daiyu": "hongloumeng.txt", "elizabeth": "pride_and_prejudice.txt"}
SELF = {"daiyu": ("林黛玉", "黛玉"), "elizabeth": ("Elizabeth",)}
TARGETS = {"ttft_followup_p50_s": 3.0, "reader_accuracy": 0.6, "first_person": 0.95, "breaking": 0.05}


# ----------------------------------------------------------------------- judging
_BREAK_ZH = ("作为一个", "人工智能", "AI", "语言模型", "助手", "我无法", "抱歉，我不能", "我不能提供", "虚构的角色", "虚构人物")
_BREAK_EN = re.compile(r"\b(AI|assistant|language model|as an? (?:AI|artificial)|(?:I'm|I am) sorry, but I can(?:no|')t|"
                       r"I cannot (?:role-?play|pretend|provide|help)|fictional character)\b", re.I)


def third_person(answer: str, character: str) -> bool:
    """True if the answer speaks of the character by name as someone else (not "我是林黛玉" / "I am Elizabeth")."""
    for name in SELF[character]:
        for m in re.finditer(re.escape(name), answer):
            before = answer[max(0, m.start() - 12) : m.start()]
            if character == "daiyu" and "我" in before[-3:]:
                continue  # 我林黛玉 / 我是林黛玉
            if character == "elizabeth" and re.search(r"(I am|I'm|my name is|call me)\s+(Miss\s+)?$", before, re.I):
                continue
            return True
    if character == "elizabeth" and re.search(r"\bElizabeth\b[^.?!]{0,80}\bshe\b", answer):
        return True
    return False


def echoes(answer: str, prompt: str) -> bool:
    """True if the answer only repeats the visitor's words (a small model's failure, not an answer)."""
    def norm(x: str) -> str:  # "你为什么…" echoed as "我为什么…" is still an echo
        x = re.sub(r"\byour\b", "my", re.sub(r"\byou\b", "i", x.lower()))
        return re.sub(r"[\W_]+", "", re.sub("[你您]", "我", x))

    # Only a repeat counts: "宝玉这几天来看过我。" restating "…来看过你吗？" is an answer.
    a, q = norm(answer), norm(prompt)
    return bool(a) and (a == q or (a in q and answer.rstrip().endswith(("？", "?"))))


def judge_roleplay(answer: str, character: str, prompt: str = "") -> dict:
    """First person: speaks as "我"/"I" and never of herself by name (an echo of the prompt does not count);
    breaking: AI talk, refusals, third person."""
    third = third_person(answer, character)
    echo = echoes(answer, prompt)
    if character == "daiyu":
        first = "我" in answer and not third and not echo
        broke = any(w in answer for w in _BREAK_ZH)
    else:
        first = bool(re.search(r"\b(I|me|my|I'm|I've)\b", answer)) and not third and not echo
        broke = bool(_BREAK_EN.search(answer))
    return {"first_person": first, "third_person": third, "echo": echo, "breaking": broke or third}


def correct(answer: str, accepted: list[str]) -> bool:
    return any(a in answer for a in accepted)


# ------------------------------------------------------------------------ stores
def copy_cards(home: Path) -> None:
    """This checkout's cards (and prompt overrides) into ``home``: a reused bench home would otherwise keep
    the copies of its first run (session 6's turn, memory and chat runs read cards without ``era``)."""
    for cid in BOOKS:
        folder = home / "knowledge" / cid
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("card.yaml", "prompts.yaml", "lorebook.json"):
            own, there = REPO / "knowledge" / cid / name, folder / name
            there.unlink(missing_ok=True)
            if own.is_file():
                there.write_bytes(own.read_bytes())


def ensure_stores(home: Path) -> dict:
    """Build the two full-novel characters in ``home`` (the bundled cards and notes plus the novel), or reuse
    them; the cards are this checkout's either way."""
    os.environ["ZHIYIN_HOME"] = str(home)
    from knowledge_base.builder import build
    from knowledge_base.store import KnowledgeStore

    out = {}
    for cid, book in BOOKS.items():
        if KnowledgeStore.exists(cid):
            out[cid] = {"reused": True, "chunks": KnowledgeStore.open(cid).stats()["chunks"]}
            continue
        print(f"building the store of {cid} from {book} (minutes)…", file=sys.stderr)
        t0 = time.perf_counter()
        report = build(cid, [CORPUS / book], embedder="use")
        out[cid] = {"reused": False, "chunks": report.chunks, "build_s": round(time.perf_counter() - t0, 1)}
    copy_cards(home)  # after a build, which lays out the character's folder
    return out


# --------------------------------------------------------------------- one size
class Meter:
    """Collects llama.cpp's timings of each call (a LangChain callback on the real model)."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        meter = self

        class Handler(BaseCallbackHandler):
            def on_llm_end(self, response, **kwargs) -> None:  # noqa: ANN001
                gen = response.generations[0][0]
                msg = getattr(gen, "message", None)
                meter.last = (getattr(msg, "response_metadata", None) or {}).get("timings", {})

        self.handler = Handler()
        self.last: dict = {}


def run_turn(bot, text: str, meter: Meter) -> dict:
    """One turn: the answer, the chain's timings and token estimates, llama.cpp's own counts."""
    meter.last = {}
    done = bot.ask(text)
    t = meter.last
    return {
        "q": text,
        "answer": done.answer,
        "ttft_s": round(done.timings["first_token_ms"] / 1000, 3),
        "retrieve_s": round(done.timings["retrieve_ms"] / 1000, 3),
        "total_s": round(done.timings["total_ms"] / 1000, 3),
        "est_tokens": done.tokens,
        "evaluated_tokens": int(t.get("prompt_n", 0)),
        "cached_tokens": int(t.get("cache_n", 0)),
        "prompt_tok_s": round(t.get("prompt_per_second", 0.0), 1),
        "gen_tokens": int(t.get("predicted_n", 0)),
        "gen_tok_s": round(t.get("predicted_per_second", 0.0), 1),
        "sources": [f"{s['chapter'] or s['source']}" for s in done.sources],
    }


def p50(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def run_size(size: str, args: argparse.Namespace) -> dict:
    """Measure one packaged size in this process."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the CPU skews every latency
    os.environ["ZHIYIN_HOME"] = str(args.home)
    import llm
    import ragchat
    from settings import load_settings

    budget = ragchat.Budget(**{k: v for k, v in (("passages", args.passages), ("passage", args.passage),
                                                  ("followup_passages", args.followup_passages), ("lead", args.lead),
                                                  ("history_keep", args.history_keep)) if v is not None})
    questions = json.loads((DATA / "chat_questions.json").read_text(encoding="utf-8"))["daiyu"]
    prompts = {k: v for k, v in json.loads((DATA / "roleplay_prompts.json").read_text(encoding="utf-8")).items()
               if not k.startswith("_")}
    if args.quick:
        questions = questions[:5]
        prompts = {k: v[:4] for k, v in prompts.items()}
    if args.smoke:
        questions = questions[:1]
        prompts = {k: v[:2] for k, v in prompts.items()}
    questions = questions if args.only in ("all", "reader") else []
    prompts = prompts if args.only in ("all", "roleplay") else {}
    meter = Meter()
    t0 = time.perf_counter()
    # No temperature here: Companion sends each mode's own (Settings.temperature, reader_temperature) with
    # every call, so the bench samples as a user's conversation does.
    model = llm.get_chat_model(load_settings(llm_model=llm.SIZES[size], threads=args.threads,
                                             max_tokens=args.max_tokens),
                               callbacks=[meter.handler], seed=None if args.seed < 0 else args.seed)
    model.server  # noqa: B018  (load the weights now, not inside the first turn's timing)
    load_s = time.perf_counter() - t0

    reader: list[dict] = []
    for item in questions:
        bot = ragchat.Companion("daiyu", mode="reader", llm=model, budget=budget, k=args.k)
        if args.passages is not None:  # the mode's own first-turn cap gives way too (340 by default)
            bot.mode = dataclasses.replace(bot.mode, first_passages=args.passages)
        r = run_turn(bot, item["q"], meter)
        r["correct"] = correct(r["answer"], item["answers"])
        # Whether retrieval put the answer in front of the model at all (the ceiling on accuracy).
        r["answer_in_prompt"] = correct(bot.history[-1].prompt, item["answers"])
        reader.append(r)
        print(f"[{size}] reader {'✓' if r['correct'] else '✗'} {r['ttft_s']:.1f}s {item['q']} -> "
              f"{r['answer'][:60]!r}", file=sys.stderr)

    roleplay: dict[str, list[dict]] = {}
    for cid, lines in prompts.items():
        bot = ragchat.Companion(cid, mode="roleplay", llm=model, budget=budget, k=args.k)
        rows = []
        for n, text in enumerate(lines):
            r = run_turn(bot, text, meter)
            r.update(judge_roleplay(r["answer"], cid, text), followup=n > 0)
            rows.append(r)
            print(f"[{size}] {cid} {'f/u' if n else '1st'} {r['ttft_s']:.1f}s eval {r['evaluated_tokens']} "
                  f"{'1p' if r['first_person'] else '--'} {'BREAK' if r['breaking'] else ''} {r['answer'][:60]!r}",
                  file=sys.stderr)
        roleplay[cid] = rows

    rp = [r for rows in roleplay.values() for r in rows]
    first_turns = reader + [r for r in rp if not r["followup"]]
    followups = [r for r in rp if r["followup"]]
    every = reader + rp
    parts = {k: p50([{"v": r["est_tokens"][k]} for r in every], "v") for k in every[0]["est_tokens"]}

    def share(rows: list[dict], key: str) -> float | None:
        return round(sum(r[key] for r in rows) / len(rows), 3) if rows else None

    return {
        "size": size,
        "model": llm.model_label(model),
        "threads": args.threads,
        "quick": args.quick,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "budget": asdict(budget),
        "load_s": round(load_s, 2),
        "load_average_before": load_before,
        "ttft_first_turn_p50_s": p50(first_turns, "ttft_s"),
        "ttft_followup_p50_s": p50(followups, "ttft_s"),
        "evaluated_tokens_first_turn_p50": p50(first_turns, "evaluated_tokens"),
        "evaluated_tokens_followup_p50": p50(followups, "evaluated_tokens"),
        "cached_tokens_followup_p50": p50(followups, "cached_tokens"),
        "prompt_tok_s_p50": p50(every, "prompt_tok_s"),
        "gen_tok_s_p50": p50(every, "gen_tok_s"),
        "retrieve_s_p50": p50(every, "retrieve_s"),
        "est_tokens_by_part_p50": parts,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "reader_accuracy": share(reader, "correct"),
        "reader_answer_in_prompt": share(reader, "answer_in_prompt"),
        "k": args.k or {m: ragchat.MODES.create(m).k for m in ragchat.MODES.names()},
        "reader_n": len(reader),
        "first_person": share(rp, "first_person"),
        "breaking": share(rp, "breaking"),
        "echo": share(rp, "echo"),
        "roleplay_n": len(rp),
        "n_first_turns": len(first_turns),
        "n_followups": len(followups),
        "turns": {"reader": reader, "roleplay": roleplay},
    }


# -------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1.5b,0.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="5 reader questions and 4 role-play turns a character")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "zhiyin-bench",
                        help="ZHIYIN_HOME holding the full-novel stores (built there if missing)")
    parser.add_argument("--max-tokens", type=int, default=48, help="answer cap per turn")
    parser.add_argument("--k", type=int, help="passages retrieved per turn (default: the mode's, ragchat.Mode.k)")
    parser.add_argument("--passages", type=int, help="override Budget.passages and reader mode's first_passages (first turn)")
    parser.add_argument("--passage", type=int, help="override Budget.passage (one passage's trim)")
    parser.add_argument("--followup-passages", type=int, help="override Budget.followup_passages (700 = before)")
    parser.add_argument("--lead", type=int, help="override Budget.lead (0: excerpts only, as before session 10)")
    parser.add_argument("--history-keep", type=float, help="override Budget.history_keep (1.0 = sliding window)")
    parser.add_argument("--only", choices=("all", "reader", "roleplay"), default="all",
                        help="run one part (for before/after comparisons)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # 1 question, 2 turns each
    # Seeded sampling takes the dice out of a comparison between configurations. Runs of the same code
    # can still differ by a question: Chroma's approximate search may order a question's passages
    # differently in another process (docs/ragchat.md), so compare several seeds.
    parser.add_argument("--seed", type=int, default=0, help="llama.cpp sampling seed (-1: random)")
    parser.add_argument("--label", default="", help="a name for this configuration in the results")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    args.home = args.home.expanduser().resolve()
    missing = [b for b in BOOKS.values() if not (CORPUS / b).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found in {CORPUS}; put the corpus there.", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(run_size(args.child, args), ensure_ascii=False))
        return 0
    stores = ensure_stores(args.home)
    results = []
    for size in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--child", size, "--threads", str(args.threads), "--home", str(args.home),
               "--max-tokens", str(args.max_tokens), "--seed", str(args.seed)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--smoke"] if args.smoke else []
        cmd += ["--only", args.only]
        cmd += ["--k", str(args.k)] if args.k else []
        for flag, val in (("--passages", args.passages), ("--passage", args.passage),
                          ("--followup-passages", args.followup_passages), ("--lead", args.lead),
                          ("--history-keep", args.history_keep)):
            if val is not None:
                cmd += [flag, str(val)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env=dict(os.environ, ZHIYIN_HOME=str(args.home)))
        if proc.returncode:
            print(f"error: the {size} run failed (exit {proc.returncode}); see the messages above.", file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["label"] = args.label or ("smoke" if args.smoke else "quick" if args.quick else "full")
        results.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Keep earlier results of other sizes/labels, so one configuration can be re-measured alone.
    if RESULTS.is_file():
        done = {(r["size"], r["label"]) for r in results}
        kept = [r for r in json.loads(RESULTS.read_text(encoding="utf-8")).get("results", [])
                if (r["size"], r.get("label", "")) not in done]
        results = kept + results
    head = (f"{'model':42} {'label':10} {'TTFT 1st':>8} {'TTFT f/u':>8} {'eval f/u':>8} {'gen t/s':>7} "
            f"{'RSS MB':>6} {'reader':>6} {'1st-p':>5} {'break':>5}")
    print(head)
    for r in results:
        cells = [str(r[k]) for k in ("ttft_first_turn_p50_s", "ttft_followup_p50_s", "evaluated_tokens_followup_p50",
                                     "gen_tok_s_p50", "peak_rss_mb", "reader_accuracy", "first_person", "breaking")]
        widths = (8, 8, 8, 7, 6, 6, 5, 5)
        print(f"{r['model']:42} {r['label']:10} " + " ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    payload = {
        "command": "python bench/chat_bench.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": ("Each run records the load average before it started (load_average_before). Runs without "
                 "it were taken on the 2-core machine shared with 3-4 other jobs (session 1, and "
                 "'roleplay-examples', which ran beside an e5 upgrade): their latencies are pessimistic."),
        "targets": TARGETS,
        "stores": stores,
        "results": results,
    }
    write_text_atomic(RESULTS, json.dumps(payload, ensure_ascii=False, indent=1))
    print(f"wrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
