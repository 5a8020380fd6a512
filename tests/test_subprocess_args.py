"""Text and file names never become options or protocols on a command line (espeak-ng, ffmpeg,
ffprobe); a recording's decoding is capped; one ffmpeg lookup, the system's first."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ffmpeg_tools
import voice
from talking_head import video
from voice.audio import VoiceError, decode_audio


def test_a_sentence_that_looks_like_an_espeak_option_is_spoken_not_obeyed(tmp_path: Path) -> None:
    target = tmp_path / "evil"  # no dot: the whole line stays one sentence
    sp = voice.speak(f"-w{target} hello there.", lang="en", engine="espeak")
    assert sp.duration_s > 0.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("evil")], "espeak wrote a file it was told to"


def _tone_wav(path: Path, seconds: float = 1.0) -> Path:
    return voice.Speech(0.3 * np.sin(np.linspace(0, 900 * seconds, int(16000 * seconds))).astype(np.float32),
                        16000, "", "test").save_wav(path)


def test_a_file_named_like_an_ffmpeg_protocol_is_read_as_that_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    _tone_wav(tmp_path / "a.wav")
    trap = Path("concat:a.wav|a.wav")  # as a protocol, ffmpeg would read a.wav twice: another file
    trap.write_bytes(b"not audio at all " * 50)
    with pytest.raises(VoiceError, match="Could not decode"):
        decode_audio(trap)
    with pytest.raises(video.MediaError):
        video.load_audio(trap)


def test_ffprobe_reads_a_file_whose_name_starts_with_a_dash(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    _tone_wav(tmp_path / "a.wav")
    shutil.copyfile(tmp_path / "a.wav", tmp_path / "-h.wav")
    probed = video.probe(Path("-h.wav"))  # bare, ffprobe took "-h.wav" for an option
    assert probed.audio_codec == "pcm_s16le" and abs(probed.duration_s - 1.0) < 0.05


def test_a_long_recording_is_refused_before_it_fills_memory(tmp_path: Path) -> None:
    long = tmp_path / "long.webm"
    # 11 minutes of quiet Opus: a few hundred KB that would decode to 42 MB of float32 at 16 kHz.
    subprocess.run([ffmpeg_tools.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=660",
                    "-c:a", "libopus", "-b:a", "8k", str(long)], check=True)
    assert long.stat().st_size < 2_000_000
    with pytest.raises(VoiceError, match="longer than 10 minutes"):
        decode_audio(long)
    with pytest.raises(VoiceError, match="longer than 10 minutes"):
        decode_audio(long.read_bytes())
    assert len(decode_audio(long, max_s=700)) == 660 * 16000  # the cap, not the decoder, refused it


def test_one_ffmpeg_lookup_prefers_the_system_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    system = shutil.which("ffmpeg")
    if system is None:
        pytest.skip("no system ffmpeg here")
    assert ffmpeg_tools.ffmpeg_exe() == system
    assert video.ffmpeg_exe() == system and voice.audio.ffmpeg_exe() == system
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a machine without one
    fallback = ffmpeg_tools.ffmpeg_exe()
    assert "imageio_ffmpeg" in fallback and os.access(fallback, os.X_OK)
