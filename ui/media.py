"""Speech and talking-head clips for an answer, one sentence at a time."""
from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from characters import Card, avatar_path


@dataclass
class SpokenSentence:
    """One sentence of an answer: its text, WAV bytes and (if video is on) MP4 bytes."""

    text: str
    wav: bytes
    duration_s: float
    engine: str
    mp4: bytes | None = None


def speak_sentences(tokens: Iterable[str], card: Card, engine: str = "auto") -> Iterator[SpokenSentence]:
    """Speak tokens sentence by sentence in the character's voice (voice.speak_stream)."""
    from voice import speak_stream

    lang = "zh" if card.language == "zh" else "en"
    for speech in speak_stream(tokens, lang=lang, engine=engine, voice=card.voice or None):
        yield SpokenSentence(speech.text, speech.wav_bytes(), round(speech.duration_s, 2), speech.engine)


def portrait_for(card: Card) -> Path | None:
    """The character's portrait file, if she has one (video needs it)."""
    return avatar_path(card)


def render_clip(head, lock: threading.Lock, sentence: SpokenSentence) -> bytes:
    """Render the talking head saying one sentence; returns the MP4 bytes."""
    import io

    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(sentence.wav), dtype="float32")
    with tempfile.TemporaryDirectory(prefix="zhiyin-clip-") as tmp:
        out = Path(tmp) / "clip.mp4"
        with lock:
            head.render((samples, rate), out)
        return out.read_bytes()
