"""Audio values shared by the speaking and listening sides: Speech, Timing, decoding, resampling."""
from __future__ import annotations

import io
import subprocess
import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

import ffmpeg_tools

ASR_RATE = 16_000  # what Whisper wants
# A question is seconds long; ten minutes of 16 kHz float32 is 38 MB, while 200 MB of Opus
# decoded without a limit would be gigabytes.
MAX_AUDIO_S = 600.0
SILENCE_PEAK = 1e-3  # below this peak amplitude (-60 dBFS) a recording holds nothing to hear


class VoiceError(RuntimeError):
    """A voice problem the user can fix; the message is one sentence naming the fix."""


@dataclass
class Timing:
    """When a piece of text is heard: seconds from the start of the audio."""

    start_s: float
    end_s: float
    text: str
    kind: str = "sentence"  # sentence | word | char


@dataclass
class Speech:
    """One utterance: mono float32 audio, the text it says, and when each piece is said."""

    audio: np.ndarray
    sample_rate: int
    text: str
    engine: str
    timings: list[Timing] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate) if self.sample_rate else 0.0

    def wav_bytes(self) -> bytes:
        """The audio as a 16-bit PCM WAV file in memory (what a browser <audio> plays)."""
        pcm = (np.clip(self.audio, -1.0, 1.0) * 32767.0).astype("<i2")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(self.sample_rate))
            wav.writeframes(pcm.tobytes())
        return buf.getvalue()

    def save_wav(self, path: str | Path) -> Path:
        """Write the audio as a 16-bit WAV (atomically) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.wav_bytes())
        tmp.replace(path)
        return path

    def to_vtt(self, kind: str = "sentence") -> str:
        """A WebVTT subtitle file from the timings of one kind (sentence cues by default)."""
        cues = [t for t in self.timings if t.kind == kind] or [t for t in self.timings if t.kind == "sentence"]
        if not cues and self.text.strip():
            cues = [Timing(0.0, self.duration_s, self.text.strip())]
        lines = ["WEBVTT", ""]
        for i, cue in enumerate(cues, 1):
            end = max(cue.end_s, cue.start_s + 0.01)
            lines += [str(i), f"{_vtt_time(cue.start_s)} --> {_vtt_time(end)}", cue.text.strip(), ""]
        return "\n".join(lines)

    def save_vtt(self, path: str | Path, kind: str = "sentence") -> Path:
        """Write :meth:`to_vtt` to a file and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_vtt(kind), encoding="utf-8")
        return path


def _vtt_time(seconds: float) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32 in and out."""
    if src_rate == dst_rate or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(src_rate), int(dst_rate))
    return resample_poly(audio, dst_rate // g, src_rate // g).astype(np.float32)


def concat(parts: list[Speech], text: str, engine: str | None = None, gap_s: float = 0.0) -> Speech:
    """Join utterances end to end at the highest sample rate among them, shifting their timings."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return Speech(np.zeros(0, np.float32), 22_050, text, engine or "none", [])
    rate = max(p.sample_rate for p in parts)
    chunks: list[np.ndarray] = []
    timings: list[Timing] = []
    offset = 0.0
    gap = np.zeros(int(gap_s * rate), np.float32)
    for i, part in enumerate(parts):
        if i and len(gap):
            chunks.append(gap)
            offset += len(gap) / rate
        audio = resample(part.audio, part.sample_rate, rate)
        chunks.append(audio)
        timings += [Timing(t.start_s + offset, t.end_s + offset, t.text, t.kind) for t in part.timings]
        offset += len(audio) / rate
    engines = engine or "+".join(dict.fromkeys(p.engine for p in parts))
    return Speech(np.concatenate(chunks), rate, text, engines, timings)


def ffmpeg_exe() -> str:
    """The ffmpeg binary (ffmpeg_tools.ffmpeg_exe: the system one first), or VoiceError naming the install."""
    try:
        return ffmpeg_tools.ffmpeg_exe()
    except ffmpeg_tools.FfmpegMissing as exc:
        raise VoiceError(str(exc)) from exc


def decode_audio(source: str | Path | bytes, rate: int = ASR_RATE, max_s: float = MAX_AUDIO_S) -> np.ndarray:
    """Decode WAV/WebM/Ogg/MP3/M4A (a path or the file's bytes) to mono float32 at ``rate``.

    Audio longer than ``max_s`` seconds is refused: ffmpeg stops decoding just past the limit, so
    a small, very long upload never becomes gigabytes of samples in memory.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name, inp = bytes(source), "the uploaded audio", "pipe:0"
        if not data:
            raise VoiceError("The audio is empty (0 bytes); record or upload it again.")
    else:
        path = Path(source)
        if not path.is_file():
            raise VoiceError(f"No audio file at {path}; check the path.")
        if path.stat().st_size == 0:
            raise VoiceError(f"The audio file {path} is empty (0 bytes); record or upload it again.")
        data, name, inp = None, str(path), ffmpeg_tools.file_arg(path)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", inp,
           "-t", f"{max_s + 1:.3f}", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    audio = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if proc.returncode != 0 or audio.size == 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f" (ffmpeg: {why[-1]})" if why else ""
        raise VoiceError(
            f"Could not decode {name} as audio{detail}; send WAV, WebM, Ogg, MP3 or M4A."
        )
    if audio.size > max_s * rate:
        raise VoiceError(f"{name[:1].upper()}{name[1:]} is longer than {max_s / 60:g} minutes; "
                         "record a shorter question.")
    return audio


def check_audible(audio: np.ndarray, rate: int, name: str = "The audio") -> None:
    """Refuse audio that is too short or silent, with a sentence saying what to do."""
    if audio.size < rate * 0.1:
        raise VoiceError(f"{name} is shorter than 0.1 s; record a whole sentence and try again.")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise VoiceError(f"{name} is silent; check the microphone (is it muted?) and record again.")
