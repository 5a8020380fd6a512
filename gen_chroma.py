"""Build and search a character's knowledge base from the command line.

    python gen_chroma.py build CHARACTER [PATH ...] [--name NAME] [--lang zh|en] [--json]
    python gen_chroma.py search CHARACTER QUERY [QUERY ...] [-k 5] [--json]
    python gen_chroma.py status CHARACTER [--json]
    python gen_chroma.py upgrade CHARACTER          (normally started in the background by build)

Results go to stdout (JSON with --json); progress bars and messages to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from characters import CharacterError, safe_id
from knowledge_base.builder import BuildReport, build
from knowledge_base.gemma import GemmaError
from knowledge_base.reading import ReadError
from knowledge_base.store import KnowledgeStore, StoreError, store_root
from knowledge_base.upgrade import claim as claim_upgrade
from knowledge_base.upgrade import forget_pid, record_pid, upgrade, upgrade_status, upgrade_target
from knowledge_base.upgrade import eta_text
from knowledge_base.upgrade import running as running_upgrade

STAGES = {"read": "reading", "embed": "embedding", "store": "storing", "keywords": "indexing"}


class TqdmProgress:
    """Maps (stage, done, total) callbacks onto one tqdm bar per stage, on stderr."""

    def __init__(self, disable: bool = False) -> None:
        self.bar: tqdm | None = None
        self.stage = ""
        self.disable = disable

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=STAGES.get(stage, stage), unit="chunk" if stage != "read" else "file",
                            file=sys.stderr, disable=self.disable, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def start_background_upgrade(character_id: str) -> int:
    """Launch `gen_chroma.py upgrade` detached, logging to the store folder; returns its pid.

    One per character: when an upgrade of this character is already running (in any process,
    started from any page), its pid is returned and nothing new starts (knowledge_base/upgrade.py).
    """
    cid = safe_id(character_id)
    fd = claim_upgrade(cid)
    if fd is None:
        return running_upgrade(cid) or -1
    try:
        with open(store_root(cid) / "upgrade.log", "ab") as log:  # the child keeps its own copy of the descriptor
            # The child inherits the locked descriptor, so the lock lives exactly as long as the upgrade.
            proc = subprocess.Popen(
                [*upgrade_argv(cid), "--lock-fd", str(fd)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy(),
                pass_fds=(fd,),
            )
        record_pid(cid, proc.pid)
    finally:
        os.close(fd)
    return proc.pid


def upgrade_argv(character_id: str) -> list[str]:
    """The command a background upgrade runs (``--lock-fd N`` is appended)."""
    return [sys.executable, str(Path(__file__).resolve()), "upgrade", character_id, "--quiet"]


def _summary(report: BuildReport) -> str:
    if report.up_to_date:
        head = f"'{report.character}' is up to date ({report.files} files, {report.chunks} chunks)"
    else:
        head = (f"Built '{report.character}': {report.files} files ({len(report.added)} added, "
                f"{len(report.changed)} changed, {len(report.removed)} removed, {len(report.unchanged)} unchanged), "
                f"{report.chunks} chunks, {report.embedded} embedded with {report.embedder}")
    return f"{head} in {report.seconds:.1f} s."


def cmd_build(args: argparse.Namespace) -> int:
    bar = TqdmProgress(disable=args.quiet)
    try:
        report = build(args.character, args.paths, name=args.name, lang=args.lang, embedder=args.embedder,
                       rebuild=args.rebuild, progress=bar, replace=args.replace)
    finally:
        bar.close()
    for skip in report.skipped:
        print(f"skipped {skip['file']}: {skip['reason']}", file=sys.stderr)
    for r in report.renamed:
        print(f"{r['file']}: that name was taken by another book; saved as {r['as']} "
              f"(use --replace to replace the old one)", file=sys.stderr)
    for r in report.replaced:
        print(f"{r['file']}: replaced; the old file is kept at {r['kept']}", file=sys.stderr)
    if report.upgrade_pending and not args.no_upgrade:
        pid = start_background_upgrade(report.character)
        print(f"Searchable now. A better index ({upgrade_target()}) is being built in the background (pid {pid}); "
              f"see `python gen_chroma.py status {report.character}`.", file=sys.stderr)
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) if args.json else _summary(report))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    store = KnowledgeStore.open(args.character, embedder=args.embedder)
    results = [{"query": q, "hits": [{"text": h.text, "source": h.source, "chapter": h.chapter,
                                      "score": h.score, "matched": h.matched} for h in store.search(q, k=args.k)]}
               for q in args.queries]
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    for r in results:
        print(f"# {r['query']}")
        if not r["hits"]:
            print("  (no passage matched)")
        for n, h in enumerate(r["hits"], 1):
            text = " ".join(h["text"].split())
            print(f"{n}. [{h['score']:.3f}] {h['source']} · {h['chapter'] or '-'}\n   {text[:160]}…")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    out = {"store": KnowledgeStore.open(args.character).stats(),
           "upgrade": upgrade_status(args.character) | {"running_pid": running_upgrade(args.character)}}
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        s, u = out["store"], out["upgrade"]
        print(f"{s['character']}: {s['files']} files, {s['chunks']} chunks, searching with {s['embedder']} "
              f"({s['dim']}-d, collection {s['collection']}), built {s['built']}")
        if u.get("target"):
            print(f"upgrade to {u.get('target')}: {u.get('stage')} {u.get('done')}/{u.get('total')}"
                  + eta_text(u.get("eta_s"))
                  + (f" (running, pid {u['running_pid']})" if u.get("running_pid") else ""))
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    cid = safe_id(args.character)
    if args.lock_fd is None:  # run by hand: take the lock, or leave the running upgrade alone
        fd = claim_upgrade(cid)
        if fd is None:
            print(f"error: an upgrade of '{cid}' is already running (pid {running_upgrade(cid)}); "
                  f"see `python gen_chroma.py status {cid}`.", file=sys.stderr)
            return 2
        record_pid(cid, os.getpid())
    bar = TqdmProgress(disable=args.quiet)
    try:
        swapped = upgrade(cid, target=args.to, progress=bar)
    finally:
        bar.close()
        forget_pid(cid)
    print("upgraded" if swapped else "not upgraded: the store kept changing; run it again")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gen_chroma.py", description="Build and search character knowledge bases.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="add texts to a character and build/update its store")
    b.add_argument("character")
    b.add_argument("paths", nargs="*", help="text files or folders (.txt, .md, .epub) to add")
    b.add_argument("--name", help="display name of a new character")
    b.add_argument("--lang", choices=["zh", "en"], help="language of a new character (detected if omitted)")
    b.add_argument("--embedder", help="use, e5, st:<folder> or auto (default: settings, auto)")
    b.add_argument("--rebuild", action="store_true", help="re-embed everything from scratch")
    b.add_argument("--no-upgrade", action="store_true", help="don't start the background index upgrade")
    b.add_argument("--replace", action="store_true",
                   help="a book whose file name is taken replaces the old one (kept in texts/.replaced/)")
    s = sub.add_parser("search", help="search a character's store")
    s.add_argument("character")
    s.add_argument("queries", nargs="+")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--embedder", help="refuse to search unless the store was built with this embedder")
    st = sub.add_parser("status", help="store statistics and background upgrade progress")
    st.add_argument("character")
    u = sub.add_parser("upgrade", help="embed with the best embedder and swap the index (what build starts in the background)")
    u.add_argument("character")
    u.add_argument("--to", help="the embedder to upgrade to (default: embeddinggemma where assembled, else e5)")
    u.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the upgrade lock, inherited from the launcher
    for sp in (b, s, st, u):
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {"build": cmd_build, "search": cmd_search, "status": cmd_status, "upgrade": cmd_upgrade}[args.command]
    try:
        return handler(args)
    except (CharacterError, ReadError, StoreError, FileNotFoundError, GemmaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the previous store is untouched.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
