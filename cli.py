"""``python ragchat.py CHARACTER -q QUESTION ...``: a conversation on the command line.

The answer streams to stdout (sources and notes on stderr), or one JSON object per turn with
``--json``. ``--speak`` (and ``--video``) run the whole pipeline; ``--out DIR`` keeps what it
made: per turn ``NN-answer.txt``, ``NN-SS.wav`` + ``NN-SS.vtt`` per sentence and ``NN-SS.mp4``.

Every conversation is saved (conversations/) for a reader: ``--user NAME`` (default: the ``reader``
setting), ``--conversation ID|new|last`` to continue one; ``--list`` lists a character's conversations,
``--export md|json`` prints one.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from characters import CharacterError, load_card
from events import Clip, Done, Sources, Speech, StageError, TextDelta
from knowledge_base.store import KnowledgeStore, StoreError
from prompting import MODES
from ragchat import ChatError


def ensure_store(character: str) -> None:
    """Build a missing store first (with progress), as the CLI promises."""
    load_card(character)  # an unknown id is an error here, never a new empty character
    if KnowledgeStore.exists(character):
        return
    from gen_chroma import TqdmProgress
    from knowledge_base.builder import build

    print(f"'{character}' has no knowledge store yet; building it first…", file=sys.stderr)
    bar = TqdmProgress()
    try:
        build(character, embedder="use", progress=bar)
    finally:
        bar.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragchat.py", description="Ask a character about her book, or chat with her.")
    p.add_argument("character")
    p.add_argument("-q", "--question", action="append", help="a turn (repeat for a conversation)")
    p.add_argument("--mode", choices=MODES.names(), help="reader (default for a new conversation) or roleplay")
    p.add_argument("--user", help="the reader's name: conversations and memories are kept per reader")
    p.add_argument("--conversation", default="new", help="ID | new | last: the saved conversation to continue")
    p.add_argument("--list", action="store_true", help="list the character's saved conversations (of --user if given)")
    p.add_argument("--export", choices=("md", "json"), help="print the --conversation as Markdown or JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object per turn instead of streaming")
    p.add_argument("-k", type=int, help="passages retrieved per turn (default: the mode's, 10 reader / 4 role-play)")
    p.add_argument("--backend", help="llamacpp | transformers | openai (default: settings)")
    p.add_argument("--model", help="model name or path (default: settings)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--speak", action="store_true", help="speak each sentence (WAV + VTT)")
    p.add_argument("--video", action="store_true", help="also render her talking head per sentence (MP4; needs --speak)")
    p.add_argument("--out", type=Path, help="folder for the answers, audio and video (default: not kept)")
    return p


def write_event(out: Path | None, n: int, event: object) -> None:
    """Keep what a turn made under ``out`` (nothing when no folder was given)."""
    if out is None:
        return
    stem = out / f"{n:02d}"
    if isinstance(event, Speech):
        (out / f"{n:02d}-{event.index:02d}.wav").write_bytes(event.wav)
        (out / f"{n:02d}-{event.index:02d}.vtt").write_text(event.vtt, encoding="utf-8")
    elif isinstance(event, Clip):
        (out / f"{n:02d}-{event.index:02d}.mp4").write_bytes(event.mp4)
    elif isinstance(event, Done):
        Path(f"{stem}-answer.txt").write_text(event.answer + "\n", encoding="utf-8")


def list_conversations(character: str, user: str | None, as_json: bool) -> int:
    """``--list``: a character's saved conversations, most recent first (one reader's, or everyone's)."""
    from conversations import default_store, reader_name

    load_card(character)
    found = default_store().list(character, reader_name(user) if user is not None else None)
    if as_json:
        print(json.dumps([asdict(c) for c in found], ensure_ascii=False, indent=1))
    elif found:
        for c in found:
            print(f"{c.id:>5}  {c.mode:8}  {c.messages:>4} msgs  {c.updated_at[:16].replace('T', ' ')}  "
                  f"{c.reader}  {c.title}")
    if not found:
        print(f"no conversations with '{character}'" + (f" for '{user}'" if user is not None else "") + " yet",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from conversations import ConversationError, open_or_create
        from knowledge_base.reading import ReadError
        from pipeline import Pipeline, build_pipeline
        from settings import load_settings

        if args.list:
            return list_conversations(args.character, args.user, args.json)
        if args.video and not args.speak:
            args.speak = True  # a clip is a spoken sentence animated
        settings = load_settings(llm_backend=args.backend, llm_model=args.model, temperature=args.temperature,
                                 max_tokens=args.max_tokens)
        load_card(args.character)
        conv = open_or_create(args.character, args.user, args.mode, args.conversation, settings=settings, k=args.k)
        if args.export:
            print(conv.export_markdown() if args.export == "md"
                  else json.dumps(conv.export_json(), ensure_ascii=False, indent=1))
            return 0
        if not args.question:
            print("error: give a question with -q (or --list, or --export with --conversation)", file=sys.stderr)
            return 2
        ensure_store(args.character)
        stages = build_pipeline(args.character, conv.mode, settings, speak=args.speak, video=args.video, k=args.k)
        pipe = Pipeline(conv, stages.voice, stages.face)  # the same stages, over the saved conversation
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        results = []
        for n, q in enumerate(args.question, 1):
            if not args.json:
                print(f"\n> {q}", file=sys.stderr)
            files: list[str] = []
            for event in pipe.turn(q):
                write_event(args.out, n, event)
                if isinstance(event, TextDelta) and not args.json:
                    print(event.text, end="", flush=True)
                elif isinstance(event, Sources) and event.warning and not args.json:
                    print(f"  ({event.warning})", file=sys.stderr)
                elif isinstance(event, StageError):
                    print(f"  ({event.stage} failed: {event.error})", file=sys.stderr)
                elif isinstance(event, (Speech, Clip)):
                    files.append(f"{n:02d}-{event.index:02d}." + ("wav" if isinstance(event, Speech) else "mp4"))
                elif isinstance(event, Done):
                    if args.json:
                        results.append({"question": q, "answer": event.answer, "sources": event.sources,
                                        "timings": event.timings, "tokens": event.tokens, "model": event.model,
                                        "warning": event.warning or None, "files": files,
                                        "conversation": conv.id})
                    else:
                        print()
                        for s in event.sources:
                            print(f"  [{s['n']}] {s['chapter'] or '-'} · {s['source']}", file=sys.stderr)
        if conv.warning:
            print(f"  ({conv.warning})", file=sys.stderr)
        if args.json:
            print(json.dumps(results, ensure_ascii=False, indent=1))
        elif conv.id is not None:
            print(f"(saved as conversation {conv.id} of '{conv.reader}'; continue it with --conversation {conv.id})",
                  file=sys.stderr)
        return 0
    except (ChatError, CharacterError, StoreError, ReadError, ConversationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
