"""Audio in, MP4 out: decoding speech, encoding H.264 + AAC at 25 fps with ffmpeg (ffmpeg_tools.py finds it)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

import ffmpeg_tools
from ffmpeg_tools import file_arg

FPS = 25


class MediaError(RuntimeError):
    """Audio or video that cannot be read or written; the message names the fix."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary (ffmpeg_tools.ffmpeg_exe: the system one first), or MediaError naming the install."""
    try:
        return ffmpeg_tools.ffmpeg_exe()
    except ffmpeg_tools.FfmpegMissing as exc:
        raise MediaError(str(exc)) from None


def load_audio(audio: Path | str | tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """(samples float32, sample rate) from a file of any format ffmpeg reads, or a (samples, sr) pair."""
    if isinstance(audio, tuple):
        samples, sr = audio
        return np.asarray(samples, dtype=np.float32), int(sr)
    path = Path(audio)
    if not path.is_file():
        raise MediaError(f"Audio file {path} does not exist; pass a WAV/MP3/OGG file of the speech.")
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=False)
        return samples, int(sr)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a format libsndfile knows (mp3 on old builds, m4a, ...): let ffmpeg decode it
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", file_arg(path), "-ac", "1", "-ar", "24000", "-f", "f32le", "-"],
        capture_output=True,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise MediaError(f"Cannot read audio from {path}; convert it to WAV (ffmpeg said: "
                         f"{proc.stderr.decode(errors='replace').strip()[-200:]}).")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), 24000


def write_video(frames: Iterable[np.ndarray], size: tuple[int, int], samples: np.ndarray, sr: int,
                out: Path, subtitles: Path | None = None, burn_subtitles: bool = False,
                fps: int = FPS) -> Path:
    """Encode RGB frames + audio to MP4 (H.264 yuv420p, AAC); subtitles as mov_text or burned in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with tempfile.TemporaryDirectory(prefix="zhiyin-th-") as tmp:
        wav = Path(tmp) / "speech.wav"
        sf.write(str(wav), samples, sr, subtype="PCM_16")
        cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", "-i", file_arg(wav)]
        maps = ["-map", "0:v", "-map", "1:a"]
        vf: list[str] = []
        codecs = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                  "-c:a", "aac", "-b:a", "96k"]
        if subtitles is not None:
            local = Path(tmp) / f"subs{Path(subtitles).suffix or '.vtt'}"
            shutil.copyfile(subtitles, local)
            if burn_subtitles:
                # run in tmp so the filter argument is a bare file name (no ':' or quotes to escape)
                vf = ["-vf", f"subtitles={local.name}:force_style='FontSize=18,Outline=1'"]
            else:
                cmd += ["-i", file_arg(local)]
                maps += ["-map", "2:s"]
                codecs += ["-c:s", "mov_text"]
        tmp_out = Path(tmp) / "out.mp4"
        cmd += maps + vf + codecs + ["-movflags", "+faststart", file_arg(tmp_out)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp)
        assert proc.stdin is not None
        try:
            for frame in frames:
                proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg died; its stderr below says why
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise MediaError(f"ffmpeg could not write {out}: {err.strip()[-300:]}")
        shutil.move(str(tmp_out), out)  # whole file or nothing at the destination
    return out


@dataclass
class Probe:
    """What a media file holds."""

    duration_s: float
    video_s: float | None
    audio_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    subtitle_codec: str | None


def probe(path: Path) -> Probe:
    """Streams and durations of a media file (ffprobe if installed, else parsing ``ffmpeg -i``)."""
    ffprobe = ffmpeg_tools.ffprobe_exe()
    if ffprobe:
        res = subprocess.run([ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", file_arg(path)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise MediaError(f"Cannot probe {path}: {res.stderr.strip()}")
        info = json.loads(res.stdout)
        by = {s["codec_type"]: s for s in reversed(info.get("streams", []))}
        v, a, s = by.get("video"), by.get("audio"), by.get("subtitle")
        rate = None
        if v and v.get("r_frame_rate", "0/0") != "0/0":
            num, den = v["r_frame_rate"].split("/")
            rate = float(num) / float(den)
        return Probe(
            float(info["format"].get("duration", 0)),
            float(v["duration"]) if v and "duration" in v else None,
            float(a["duration"]) if a and "duration" in a else None,
            int(v["width"]) if v else None, int(v["height"]) if v else None, rate,
            v["codec_name"] if v else None, a["codec_name"] if a else None, s["codec_name"] if s else None,
        )
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", file_arg(path)], capture_output=True, text=True)
    text = res.stderr
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    total = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else 0.0
    vm = re.search(r"Video: (\w+).*?, (\d+)x(\d+).*?([\d.]+) fps", text)
    am = re.search(r"Audio: (\w+)", text)
    sm = re.search(r"Subtitle: (\w+)", text)
    return Probe(total, total if vm else None, total if am else None,
                 int(vm[2]) if vm else None, int(vm[3]) if vm else None, float(vm[4]) if vm else None,
                 vm[1] if vm else None, am[1] if am else None, sm[1] if sm else None)


def read_frames(path: Path, size: int) -> np.ndarray:
    """Decode an MP4 to (n, size, size, 3) RGB uint8 (for tests and measurements)."""
    res = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", file_arg(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True)
    if res.returncode != 0:
        raise MediaError(f"Cannot decode {path}: {res.stderr.decode(errors='replace')[-200:]}")
    return np.frombuffer(res.stdout, np.uint8).reshape(-1, size, size, 3)
