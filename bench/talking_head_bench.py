"""Talking-head benchmark: compute seconds per second of video at 256/512 px, and first-sentence delay.

Run: python bench/talking_head_bench.py   (prints a table, writes bench/results/talking_head.json)
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

import talking_head as th  # noqa: E402
from talking_head.video import write_video  # noqa: E402

SENTENCES = [
    "Good day! You find me between a walk and a book.",
    "I could easily forgive his pride, if he had not mortified mine.",
    "What would you like to talk of? Tell me, and I shall listen with all my attention.",
]


def speak(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-gb", "-w", str(path), text], check=True)
    return path


def cpu_time() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is missing: apt-get install -y espeak-ng")
    os.environ.setdefault("ZHIYIN_HOME", tempfile.mkdtemp(prefix="zhiyin-bench-"))
    portrait = REPO / "avatars" / "elizabeth.png"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        wavs = [speak(s, tmpd / f"s{i}.wav") for i, s in enumerate(SENTENCES)]
        whole = np.concatenate([sf.read(str(w), dtype="float32")[0] for w in wavs])
        sr = sf.info(str(wavs[0])).samplerate
        th.TalkingHead(portrait)  # warm up: imports, FaceMesh graph, landmark cache
        for size in (256, 512):
            t0 = time.perf_counter()
            head = th.TalkingHead(portrait, size=size)
            setup_s = time.perf_counter() - t0
            controls, samples, sr_ = head.drive((whole, sr))
            seconds = controls.frames / th.FPS
            t1, c1 = time.perf_counter(), cpu_time()
            frames = list(head.renderer.frames(controls))
            t2 = time.perf_counter()
            write_video(frames, (size, size), samples, sr_, tmpd / f"all{size}.mp4")
            t3, c3 = time.perf_counter(), cpu_time()
            # first sentence: the head is ready (cached per character); its speech has just arrived
            f0 = time.perf_counter()
            head.render(wavs[0], tmpd / f"first{size}.mp4")
            first_s = time.perf_counter() - f0
            rows.append({
                "size": size, "video_s": round(seconds, 2), "setup_s": round(setup_s, 3),
                "render_wall_per_video_s": round((t2 - t1) / seconds, 3),
                "encode_wall_per_video_s": round((t3 - t2) / seconds, 3),
                "total_wall_per_video_s": round((t3 - t1) / seconds, 3),
                "total_cpu_per_video_s": round((c3 - c1) / seconds, 3),
                "first_sentence_audio_s": round(sf.info(str(wavs[0])).duration, 2),
                "first_sentence_ready_s": round(first_s, 3),
            })
    print(f"{'size':>5} {'video s':>8} {'setup s':>8} {'render/s':>9} {'x264/s':>7} {'total/s':>8} "
          f"{'cpu/s':>6} {'1st sent. s':>11} {'ready s':>8}")
    for r in rows:
        print(f"{r['size']:>5} {r['video_s']:>8} {r['setup_s']:>8} {r['render_wall_per_video_s']:>9} "
              f"{r['encode_wall_per_video_s']:>7} {r['total_wall_per_video_s']:>8} {r['total_cpu_per_video_s']:>6} "
              f"{r['first_sentence_audio_s']:>11} {r['first_sentence_ready_s']:>8}")
    out = REPO / "bench" / "results" / "talking_head.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
                               "portrait": portrait.name, "rows": rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
