"""Knowledge-base benchmark: build time, chunks, peak memory, rebuild time, search latency and recall.

    python bench/kb_bench.py [--books hongloumeng pride_and_prejudice] [--upgrade [--upgrade-to NAME]] [--home DIR]

For each test novel (../shared/corpus) it builds a fresh store with the fast USE index in a
child process (wall time to searchable, and that process's peak RSS via wait4), times an
unchanged rebuild, then runs the questions of bench/data/retrieval_questions.json (the set the
fusion settings were chosen on) and of retrieval_questions_heldout.json (written afterwards) against it:
search latency (warm, p50/p95) and recall@1/@5, where a hit counts when its text
(whitespace-normalised) contains an evidence string; "+neighbours" also counts the chunks on
either side of a hit (store.neighbours), i.e. what the chat prompt can be given; recall@20 is the
fused ranking's top 20 (what a second look at the candidates could reach). ``--upgrade`` also runs
the background upgrade (``--upgrade-to``: e5 by default, or embeddinggemma: 10+ minutes on the Chinese
novel) and measures again. ``--home`` keeps the stores and the vector cache, so an interrupted
upgrade resumes where it stopped.
Prints a table and writes bench/results/kb.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ZHIYIN_MODELS", str(REPO / "checkpoints"))

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
QUESTIONS = HERE / "data" / "retrieval_questions.json"  # the set the retrieval design was tuned on
HELDOUT = HERE / "data" / "retrieval_questions_heldout.json"  # written afterwards: does the tuning generalise?
RESULTS = HERE / "results" / "kb.json"
BOOKS = {  # question-set key -> (file, character id, language)
    "hongloumeng": ("hongloumeng.txt", "bench-hlm", "zh"),
    "pride_and_prejudice": ("pride_and_prejudice.txt", "bench-pp", "en"),
}


def _squash(text: str, lang: str) -> str:
    """Whitespace-normalised text: removed for Chinese, single spaces for English."""
    return "".join(text.split()) if lang == "zh" else " ".join(text.split())


def home_args(doc: str, out: str) -> argparse.Namespace:
    """--home (a home this bench built and upgraded) and --out (bench/results/OUT) for the benches over it."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--home", required=True, help="the ZHIYIN_HOME kb_bench.py --home built and upgraded")
    p.add_argument("--out", type=Path, default=HERE / "results" / out)
    return p.parse_args()


def upgraded_stores(home: str):  # -> Iterator[tuple[str, str, KnowledgeStore, list[tuple[str, list[dict]]]]]
    """For the benches that read the stores ``kb_bench.py --home HOME --upgrade --upgrade-to embeddinggemma``
    left: (book, language, its store on EmbeddingGemma with windows, [("ours", questions), ("held-out", …)])."""
    os.environ["ZHIYIN_HOME"] = home
    from knowledge_base.store import KnowledgeStore

    for book, (_, cid, lang) in BOOKS.items():
        store = KnowledgeStore.open(cid)
        if store._dense_indexes[0].name != "embeddinggemma" or store._windows is None:
            raise SystemExit(f"{cid} in {home} is not on EmbeddingGemma with windows; run kb_bench --upgrade first")
        sets = [(name, json.loads(path.read_text(encoding="utf-8"))[book])
                for name, path in (("ours", QUESTIONS), ("held-out", HELDOUT))]
        yield book, lang, store, sets


def evidence_rows(chunks: list[dict], questions: list[dict], lang: str) -> list[set[int]]:
    """For each question, the rows of ``chunks`` that hold one of its evidence strings (the hit rule)."""
    flat = [_squash(c["text"], lang) for c in chunks]
    return [{r for r, t in enumerate(flat) if any(_squash(e, lang) in t for e in q["evidence"])} for q in questions]


def recall_at(scores: Iterable[np.ndarray], gold: list[set[int]], ks: tuple[int, ...] = (1, 5, 20)) -> list[float]:
    """recall@k of exact rankings: each question's scores over every row, ties broken by row (repeatable)."""
    hits = np.zeros(len(ks))
    for score, g in zip(scores, gold, strict=True):
        order = np.lexsort((np.arange(len(score)), -score))
        hits += [bool(g & set(order[:k].tolist())) for k in ks]
    return (hits / len(gold)).round(2).tolist()


def _child(argv: list[str]) -> None:
    """In a child process: one build or upgrade, its report as JSON on stdout."""
    from knowledge_base.builder import build, upgrade

    started = time.perf_counter()
    if argv[0] == "build":
        _, cid, path, lang = argv
        out = build(cid, [path], lang=lang, embedder="use").to_dict()
    else:
        out = {"upgraded": upgrade(argv[1], target=argv[2])}
    out["process_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(out))


def run_child(*args: str) -> tuple[dict, float, float]:
    """Run ``_child`` in a fresh interpreter; returns (its JSON, wall seconds, peak RSS in MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    out = proc.stdout.read()
    # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would mix in earlier children).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


def evaluate(cid: str, questions: list[dict], lang: str) -> dict:
    """Warm search latency and recall of the live store of ``cid``."""

    from knowledge_base.store import KnowledgeStore

    t0 = time.perf_counter()
    store = KnowledgeStore.open(cid)
    store.search(questions[0]["q"])  # warm-up: loads the query embedder and jieba
    open_s = time.perf_counter() - t0
    latencies, r1, r5, r20, n1, n5, d5, d20, b5 = [], 0, 0, 0, 0, 0, 0, 0, 0
    misses = []
    for item in questions:
        t = time.perf_counter()
        hits = store.search(item["q"], k=20)
        latencies.append((time.perf_counter() - t) * 1000)
        deep, hits = hits, hits[:5]
        evidence = [_squash(e, lang) for e in item["evidence"]]

        def found(text: str, evidence: list[str] = evidence) -> bool:
            flat = _squash(text, lang)
            return any(e in flat for e in evidence)

        plain = [found(h.text) for h in hits]
        # Diagnostics: each half of the hybrid search alone (top 5 of its own ranking).
        # (@20 of the active dense index: what a reranker over its top 20 could reach at most.)
        dense_rows = store._dense(item["q"], 20)
        bm25, coverage = store._keywords.scores(store.tokenize(item["q"]))
        bm25_rows = [int(r) for r in np.argsort(-bm25)[:5] if bm25[r] > 0] if coverage else []
        d5 += any(found(store.chunks[r]["text"]) for r in dense_rows[:5])
        d20 += any(found(store.chunks[r]["text"]) for r in dense_rows)
        b5 += any(found(store.chunks[r]["text"]) for r in bm25_rows)
        wide = [found(store.neighbours(h)) for h in hits]
        r1 += bool(plain[:1] and plain[0])
        r5 += any(plain)
        r20 += any(found(h.text) for h in deep)
        n1 += bool(wide[:1] and wide[0])
        n5 += any(wide)
        if not any(wide):
            misses.append(item["q"])
    n = len(questions)
    latencies.sort()
    return {
        "embedder": store.embedder_name,
        "questions": n,
        "open_and_warm_s": round(open_s, 2),
        "search_p50_ms": round(statistics.median(latencies), 1),
        "search_p95_ms": round(latencies[min(n - 1, int(round(0.95 * (n - 1))))], 1),
        "recall_at_1": round(r1 / n, 3),
        "recall_at_5": round(r5 / n, 3),
        "recall_at_20": round(r20 / n, 3),
        "recall_at_1_with_neighbours": round(n1 / n, 3),
        "recall_at_5_with_neighbours": round(n5 / n, 3),
        "diagnostic_recall_at_5_dense_only": round(d5 / n, 3),
        "diagnostic_recall_at_5_bm25_only": round(b5 / n, 3),
        "diagnostic_recall_at_20_dense_only": round(d20 / n, 3),
        "missed_even_with_neighbours": misses,
    }


def bench_book(key: str, questions: list[dict], heldout: list[dict], upgrade_to: str | None) -> dict:
    from knowledge_base.builder import build

    file, cid, lang = BOOKS[key]
    path = CORPUS / file
    print(f"[{key}] building with USE ...", file=sys.stderr, flush=True)
    report, wall, rss = run_child("build", cid, str(path), lang)
    t = time.perf_counter()
    again = build(cid, [path], lang=lang, embedder="use")
    rebuild_s = time.perf_counter() - t
    assert again.up_to_date and again.embedded == 0, "an unchanged rebuild re-embedded passages"
    print(f"[{key}] searching {len(questions)} questions ...", file=sys.stderr, flush=True)
    result = {
        "file": file,
        "chunks": report["chunks"],
        "characters": None,
        "build_wall_s": round(wall, 1),  # child process: interpreter start, imports, model load, build
        "build_s": report["seconds"],  # inside build(): read, chunk, embed, store, BM25
        "build_peak_rss_mb": round(rss),
        "unchanged_rebuild_s": round(rebuild_s, 2),
        "use": evaluate(cid, questions, lang),
        "use_heldout": evaluate(cid, heldout, lang),
    }
    from knowledge_base.store import KnowledgeStore

    result["characters"] = KnowledgeStore.open(cid).stats()["characters"]
    if upgrade_to:
        print(f"[{key}] upgrading to {upgrade_to} (slow) ...", file=sys.stderr, flush=True)
        up, wall, rss = run_child("upgrade", cid, upgrade_to)
        result["upgrade_wall_s"] = round(wall, 1)
        result["upgrade_peak_rss_mb"] = round(rss)
        result["upgraded"] = evaluate(cid, questions, lang)
        result["upgraded_heldout"] = evaluate(cid, heldout, lang)
    return result


def table(results: dict) -> str:
    head = ("book", "chunks", "build s", "peak MB", "rebuild s", "index", "p50 ms", "p95 ms",
            "R@1", "R@5", "R@20", "R@1+nb", "R@5+nb", "R@5 dense", "R@20 dense", "R@5 bm25")
    rows = [head]
    for key, r in results.items():
        for index in ("use", "use_heldout", "upgraded", "upgraded_heldout"):
            if index not in r:
                continue
            e = r[index]
            if index == "use":
                built = (str(r["chunks"]), f"{r['build_wall_s']:.1f}", str(r["build_peak_rss_mb"]),
                         f"{r['unchanged_rebuild_s']:.2f}")
            elif index == "upgraded":
                built = ("", f"+{r['upgrade_wall_s']:.0f}", str(r["upgrade_peak_rss_mb"]), "")
            else:
                built = ("", "", "", "")
            label = e["embedder"] + (" held-out" if index.endswith("_heldout") else "")
            rows.append((key if index == "use" else "", *built, label, f"{e['search_p50_ms']:.0f}",
                         f"{e['search_p95_ms']:.0f}", f"{e['recall_at_1']:.2f}", f"{e['recall_at_5']:.2f}",
                         f"{e['recall_at_20']:.2f}",
                         f"{e['recall_at_1_with_neighbours']:.2f}", f"{e['recall_at_5_with_neighbours']:.2f}",
                         f"{e['diagnostic_recall_at_5_dense_only']:.2f}",
                         f"{e['diagnostic_recall_at_20_dense_only']:.2f}", f"{e['diagnostic_recall_at_5_bm25_only']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--books", nargs="+", choices=sorted(BOOKS), default=sorted(BOOKS))
    p.add_argument("--upgrade", action="store_true", help="also run the background upgrade (10+ min on the Chinese novel)")
    p.add_argument("--upgrade-to", default="e5", help="the embedder to upgrade to: e5 (default) or embeddinggemma")
    p.add_argument("--home", help="ZHIYIN_HOME to build in (default: a fresh temporary folder)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = p.parse_args()
    if not CORPUS.is_dir():
        print(f"error: the corpus is not at {CORPUS}; it is needed for this benchmark.", file=sys.stderr)
        return 2
    home = Path(args.home or tempfile.mkdtemp(prefix="zhiyin-kb-bench-"))
    os.environ["ZHIYIN_HOME"] = str(home)  # fresh stores and vector cache: the first build embeds all
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    heldout = json.loads(HELDOUT.read_text(encoding="utf-8"))
    load_before = os.getloadavg()
    target = args.upgrade_to if args.upgrade else None
    results = {key: bench_book(key, questions[key], heldout[key], target) for key in args.books}
    out = {
        "command": " ".join(["python", "bench/kb_bench.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 1) for x in load_before],
                    "loadavg_after": [round(x, 1) for x in os.getloadavg()]},
        # The load average lags by minutes and includes this run's own ~2 cores of work, so it is
        # recorded for the reader to judge rather than turned into a verdict here.
        "note": ("Load averages before and after are recorded; a run alone on the 2 cores ends near 2 "
                 "(its own work). Higher means other jobs shared the CPU and timings are pessimistic."),
        "home": str(home),
        "books": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
        out["home"] = "(a temporary folder, removed)"
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
