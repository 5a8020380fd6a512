"""CLI: ``python -m talking_head PORTRAIT AUDIO --out FILE.mp4 [--size 256|512] [--json]``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the checkout


def main(argv: list[str] | None = None) -> int:
    """Render one talking-head video; result on stdout, progress and errors on stderr."""
    parser = argparse.ArgumentParser(prog="python -m talking_head", description=__doc__)
    parser.add_argument("portrait", type=Path, help="portrait image (PNG/JPEG)")
    parser.add_argument("audio", type=Path, help="speech (WAV/MP3/OGG/...)")
    parser.add_argument("--out", type=Path, required=True, help="output MP4 file")
    parser.add_argument("--size", type=int, choices=(256, 512), default=None, help="video size (default: setting video_size)")
    parser.add_argument("--subtitles", type=Path, default=None, help="WebVTT/SRT subtitles to add")
    parser.add_argument("--burn", action="store_true", help="burn the subtitles into the picture instead of a soft track")
    parser.add_argument("--renderer", default="warp", help="face renderer (warp, sadtalker)")
    parser.add_argument("--enhancer", default="auto", help="face enhancer (auto, gfpgan, sharpen, none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")

    from settings import load_settings
    from talking_head import MediaError, PortraitError, StageUnavailable, render_talking_head

    size = args.size or load_settings().video_size
    try:
        result = render_talking_head(args.portrait, args.audio, args.out, size=size, subtitles_vtt=args.subtitles,
                                     burn_subtitles=args.burn, renderer=args.renderer, enhancer=args.enhancer)
    except (MediaError, PortraitError, StageUnavailable, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        face = "face animated" if result.face_found else "no face found: still image"
        print(f"{result.path} ({result.duration_s:.2f} s, {result.frames} frames, {face})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
