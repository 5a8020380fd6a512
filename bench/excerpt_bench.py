"""Does the evidence reach the reader's prompt? Whole passages, excerpts, the best passage whole + excerpts.

    python bench/excerpt_bench.py --home DIR [--ids hongloumeng=bench-hlm pride_and_prejudice=bench-pp] [--tokens N]

Runs on the stores that ``bench/kb_bench.py --home DIR`` left behind,
for both retrieval question sets. For each question it compares what a first reader turn's
passage tokens (reader mode's ``first_passages``, 340; ``--tokens`` to try others) can hold:

- ``whole``: the top passages in rank order, as many as fit (ragchat.whole_passages: role-play's way, and
  the reader's before knowledge_base/excerpts.py);
- ``excerpts``: the sentences excerpts.select picks from the top passages reader mode retrieves (ragchat.Mode.k);
- ``lead``: the best passage whole up to Budget.lead tokens, then excerpts of the rest (the reader since
  session 10, ragchat.lead_and_excerpts).

A question counts when an evidence string (whitespace-normalised) is inside what was kept.
Prints a table and writes bench/results/excerpts.json.
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

from kb_bench import BOOKS, HELDOUT, QUESTIONS, _squash  # noqa: E402

from fileio import write_text_atomic  # noqa: E402  (after the repo is on sys.path)

RESULTS = HERE / "results" / "excerpts.json"


def measure(cid: str, questions: list[dict], lang: str, tokens: int = 0) -> dict:
    import ragchat
    from knowledge_base.store import KnowledgeStore

    store = KnowledgeStore.open(cid)
    budget = ragchat.Budget()
    reader = ragchat.MODES.create("reader")
    room = tokens or reader.first_passages  # what a first reader turn reads (340)
    found = {"whole": 0, "excerpts": 0, "lead": 0}
    ms = []
    for item in questions:
        evidence = [_squash(e, lang) for e in item["evidence"]]
        hits = store.search(item["q"], k=reader.k)
        kept = {"whole": [body for _, body in ragchat.whole_passages(hits, room, budget.passage, lang)]}
        t = time.perf_counter()
        kept["excerpts"] = [body for _, body in ragchat.lead_and_excerpts(item["q"], hits, room, budget.passage, 0, lang, store)]
        ms.append((time.perf_counter() - t) * 1000)
        kept["lead"] = [body for _, body in ragchat.lead_and_excerpts(item["q"], hits, room, budget.passage, budget.lead,
                                                                      lang, store)]
        for name, bodies in kept.items():
            found[name] += any(e in _squash(" ".join(bodies), lang) for e in evidence)
    n = len(questions)
    ms.sort()
    return {"n": n, "tokens": room, **{name: round(v / n, 3) for name, v in found.items()},
            "select_ms_p50": round(ms[n // 2], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the home given to kb_bench.py --home")
    parser.add_argument("--ids", nargs="*", default=[], help="BOOK=CHARACTER_ID, for stores not named as kb_bench names them")
    parser.add_argument("--tokens", type=int, default=0, help="passage tokens (default: a first reader turn's, 340)")
    args = parser.parse_args()
    os.environ["ZHIYIN_HOME"] = str(args.home)
    ids = {book: cid for book, (_, cid, _) in BOOKS.items()} | dict(x.split("=", 1) for x in args.ids)
    rows = {}
    for label, path in (("ours", QUESTIONS), ("held-out", HELDOUT)):
        sets = json.loads(path.read_text(encoding="utf-8"))
        for book, (_, _, lang) in BOOKS.items():
            rows[f"{book} {label}"] = measure(ids[book], sets[book], lang, args.tokens)
    print(f"{'set':<34}{'n':>4}{'tokens':>8}{'whole':>8}{'excerpts':>10}{'lead+exc':>10}{'select p50':>12}")
    for name, r in rows.items():
        print(f"{name:<34}{r['n']:>4}{r['tokens']:>8}{r['whole']:>8}{r['excerpts']:>10}{r['lead']:>10}"
              f"{r['select_ms_p50']:>10} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS, json.dumps({"command": "python " + " ".join(["bench/excerpt_bench.py", *sys.argv[1:]]),
                                           "home": str(args.home), "results": rows}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
