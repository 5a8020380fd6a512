"""CLI: ``python -m finetune extract|train|voice|adapters ...`` (results on stdout, progress on stderr).

``voice`` is extract and train in one: her lines from her own texts (knowledge/<id>/texts/), then her
adapter; the Settings page's "Train her voice" button runs it in the background (finetune/job.py)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python -m finetune` from elsewhere still finds settings.py
    sys.path.insert(0, str(REPO))


def _persona(character: str, aliases: list[str]) -> tuple[str, list[str], str]:
    """(system prompt, names to look for, language hint) from the card, or from --alias for a new name."""
    import characters

    try:
        card = characters.load_card(character)
    except characters.CharacterError:
        card = None
    if card is None:
        if not aliases:
            raise SystemExit(f"No character card for '{character}'; pass the names to look for with --alias NAME.")
        return f"You are {aliases[0]}. 你是{aliases[0]}。", aliases, ""
    system = "\n".join(x for x in (card.persona, card.speaking_style) if x).strip() or f"You are {card.name}."
    return system, aliases or card.names, card.language


def cmd_extract(args: argparse.Namespace) -> dict[str, Any]:
    from finetune.extract import FORMATS, dedupe, extract_lines, read_text

    system, names, _ = _persona(args.character, args.alias or [])
    found = []
    per_file: dict[str, int] = {}
    for p in args.paths:
        path = Path(p)
        if not path.is_file():
            raise SystemExit(f"No file {path}; give the path of the novel's text file.")
        try:
            text, encoding = read_text(path)
        except ValueError as exc:
            raise SystemExit(f"Cannot read {path}: {exc}") from None
        lines = extract_lines(text, names, source=path.name)
        per_file[path.name] = len(lines)
        print(f"{path.name} ({encoding}): {len(lines)} lines of {args.character}", file=sys.stderr)
        found += lines
    unique = dedupe(found)
    if not unique:
        raise SystemExit(f"No lines of {args.character} found; check the names ({', '.join(names)}) or add --alias NAME.")
    fmt = FORMATS.create(args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in unique:
            fh.write(json.dumps(fmt.record(line, system), ensure_ascii=False) + "\n")
    tmp.replace(out)
    for line in unique[: args.show]:
        print(f"  [{line.method}] {line.input[:60]!r} -> {line.output[:80]!r}", file=sys.stderr)
    methods: dict[str, int] = {}
    for line in unique:
        methods[line.method] = methods.get(line.method, 0) + 1
    return {"character": args.character, "names": names, "files": per_file, "found": len(found),
            "unique": len(unique), "by_method": methods, "format": args.format, "out": str(out)}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from finetune.train import TrainConfig, TrainError, train

    config = TrainConfig(steps=args.steps, lr=args.lr, rank=args.rank, alpha=args.alpha or 2 * args.rank,
                         batch_size=args.batch_size, max_len=args.max_len)
    try:
        result = train(args.character, Path(args.data), base=args.base or "", config=config, resume=args.resume)
    except TrainError as exc:
        raise SystemExit(str(exc)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    m = result.manifest
    before, after = m["eval"]["before"], m["eval"]["after"]
    print(f"held-out loss {before['loss']} -> {after['loss']} (perplexity {before['perplexity']} -> "
          f"{after['perplexity']}) on {m['samples']['eval']} lines", file=sys.stderr)
    return {"adapter": str(result.adapter), "steps": m["steps_done"], "eval": m["eval"],
            "samples_per_second": m["samples_per_second"], "base_model": m["base_model"]}


def cmd_voice(args: argparse.Namespace) -> dict[str, Any]:
    """Her lines from her own texts, then her LoRA adapter trained on them."""
    from characters import texts_dir
    from finetune.train import adapter_dir
    from knowledge_base.builder import book_files  # the same books her store is built from

    books = book_files(args.character)
    if not books:
        raise SystemExit(f"{args.character} has no texts in {texts_dir(args.character)}; add her book first.")
    lines = adapter_dir(args.character) / "lines.jsonl"
    print(f"extract: {len(books)} text(s) -> {lines}", file=sys.stderr)
    found = cmd_extract(argparse.Namespace(character=args.character, paths=[str(b) for b in books], out=str(lines),
                                           alias=None, format="xtuner", show=0))
    print(f"extract: {found['unique']} lines of hers", file=sys.stderr)
    trained = cmd_train(argparse.Namespace(character=args.character, data=str(lines), base=args.base, steps=args.steps,
                                           lr=2e-4, rank=8, alpha=0, batch_size=2, max_len=320, resume=False))
    return {"lines": found["unique"]} | trained


def cmd_adapters(args: argparse.Namespace) -> dict[str, Any]:
    """List a character's adapter versions (newest last), or make one of them the live one."""
    from finetune.train import adapter_dir
    from llm import adapters

    folder = adapter_dir(args.character)
    if args.live:
        version = folder / args.live
        if not adapters.is_adapter(version):
            names = ", ".join(v.name for v in adapters.versions(folder)) or "none"
            raise SystemExit(f"No adapter version '{args.live}' of {args.character}; choose one of: {names}.")
        adapters.set_live(folder, version)
    live = adapters.live(folder)
    rows = []
    for version in adapters.versions(folder):
        manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8")) \
            if (version / "manifest.json").is_file() else {}
        after = manifest.get("eval", {}).get("after", {})
        rows.append({"version": version.name, "live": version == live, "status": manifest.get("status", "?"),
                     "steps": manifest.get("steps_done"), "eval_loss": after.get("loss")})
    return {"character": args.character, "folder": str(folder), "live": live.name if live else None,
            "versions": rows}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from finetune.extract import FORMATS

    ap = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="find a character's lines in novels and write training data")
    ex.add_argument("character", help="character id (card) or a name with --alias")
    ex.add_argument("paths", nargs="+", help="novel text files (any encoding)")
    ex.add_argument("--out", required=True, help="JSONL file to write")
    ex.add_argument("--alias", action="append", help="a name the character goes by (repeat); replaces the card's names")
    ex.add_argument("--format", choices=FORMATS.names(), default="xtuner")
    ex.add_argument("--show", type=int, default=3, help="samples to print on stderr")
    ex.add_argument("--json", action="store_true", help="print the summary as JSON")
    tr = sub.add_parser("train", help="train the character's LoRA adapter on extracted lines")
    tr.add_argument("character")
    tr.add_argument("--data", required=True, help="JSONL from `extract` (xtuner or messages format)")
    tr.add_argument("--base", default="", help="HF model folder or .gguf file (default: packaged Qwen2.5-Coder-0.5B)")
    tr.add_argument("--steps", type=int, default=60)
    tr.add_argument("--lr", type=float, default=2e-4)
    tr.add_argument("--rank", type=int, default=8)
    tr.add_argument("--alpha", type=int, default=0, help="LoRA alpha (default 2 x rank)")
    tr.add_argument("--batch-size", type=int, default=2)
    tr.add_argument("--max-len", type=int, default=320, help="tokens per sample")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run")
    tr.add_argument("--json", action="store_true")
    vo = sub.add_parser("voice", help="extract her lines from her own texts and train her adapter (what the page runs)")
    vo.add_argument("character")
    vo.add_argument("--base", default="", help="as for train")
    vo.add_argument("--steps", type=int, default=60)
    vo.add_argument("--json", action="store_true")
    ad = sub.add_parser("adapters", help="list a character's adapter versions, or choose the live one")
    ad.add_argument("character")
    ad.add_argument("--live", metavar="VERSION", help="serve this version (e.g. the one before the last training)")
    ad.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        summary = {"extract": cmd_extract, "train": cmd_train, "voice": cmd_voice,
                   "adapters": cmd_adapters}[args.cmd](args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"error: {exc.code}", file=sys.stderr)
            return 2
        return int(exc.code or 0)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
