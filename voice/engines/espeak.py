"""espeak-ng from Debian: any language, robotic, always there; the last resort. Chinese is read
from tone-numbered pinyin."""
from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np

from voice.audio import Speech, VoiceError
from voice.engine import TTS_ENGINES, TTSEngine
from voice.text import numbers_to_chinese


@TTS_ENGINES.register("espeak")
class EspeakEngine(TTSEngine):
    """espeak-ng from Debian: robotic but always there; Chinese from tone-numbered pinyin."""

    name = "espeak"
    languages = frozenset({"zh", "en"})
    default_voices = {"zh": "cmn-latn-pinyin", "en": "en-us"}

    def __init__(self) -> None:
        self.exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if not self.exe:
            raise VoiceError("espeak-ng is missing; install it with `apt-get install espeak-ng`.")

    def voices(self) -> list[str]:
        return []  # espeak-ng knows ~100 voices; it reports an unknown one itself

    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        spoken = text
        if voice.startswith("cmn-latn-pinyin") or (lang == "zh" and voice.startswith("cmn")):
            from pypinyin import Style, lazy_pinyin

            # espeak-ng reads Mandarin only as tone-numbered pinyin ("ni3 hao3").
            spoken = " ".join(lazy_pinyin(numbers_to_chinese(text), style=Style.TONE3,
                                          neutral_tone_with_five=True))
        # The text goes in on stdin, never as an argument: a sentence that starts with "-w/path"
        # would otherwise be read as espeak's option to write a file there.
        cmd = [self.exe, "--stdout", "--stdin", "-b", "1", "-v", voice, "-s", str(int(175 * rate)),
               "-p", str(int(min(99, max(0, 50 + pitch * 4)))), "-a", str(int(min(200, max(0, 100 * volume))))]
        proc = subprocess.run(cmd, input=spoken.encode("utf-8"), capture_output=True, check=False)
        if proc.returncode != 0 or not proc.stdout:
            why = proc.stderr.decode("utf-8", "replace").strip()
            raise VoiceError(f"espeak-ng failed with voice '{voice}' ({why}); list voices with `espeak-ng --voices`.")
        with wave.open(io.BytesIO(_fix_wav_header(proc.stdout))) as wav:
            rate_hz = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return Speech(pcm.astype(np.float32) / 32768.0, rate_hz, text, self.name, [])


def _fix_wav_header(data: bytes) -> bytes:
    # espeak-ng writes 0x7fffffff sizes when streaming to stdout; set the real ones.
    if data[:4] != b"RIFF":
        return data
    buf = bytearray(data)
    buf[4:8] = (len(buf) - 8).to_bytes(4, "little")
    idx = buf.find(b"data", 12)
    if idx >= 0:
        buf[idx + 4:idx + 8] = (len(buf) - idx - 8).to_bytes(4, "little")
    return bytes(buf)

