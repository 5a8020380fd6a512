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

    for speech in speak_stream(tokens, lang=card.lang, engine=engine, voice=card.voice or None):
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


class LiveSpeech:
    """Speaks an answer while it is still being generated.

    ``tee`` passes the model's tokens through unchanged (to ``st.write_stream``) and
    hands them to a worker thread that speaks each sentence as soon as it is complete
    (and renders its talking-head clip); ``ready`` returns the sentences finished so
    far, so the page can play the first one before the answer ends. The worker makes
    no Streamlit calls: only the script thread touches the page.
    """

    def __init__(self, card: Card, engine: str = "auto", head=None, lock: threading.Lock | None = None) -> None:
        import queue

        self._tokens: queue.Queue[str | None] = queue.Queue()
        self._done: queue.Queue[SpokenSentence | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._work, args=(card, engine, head, lock), daemon=True)
        self._thread.start()

    def _work(self, card: Card, engine: str, head, lock: threading.Lock | None) -> None:
        try:
            for sentence in speak_sentences(iter(self._tokens.get, None), card, engine):
                if head is not None:
                    sentence.mp4 = render_clip(head, lock or threading.Lock(), sentence)
                self._done.put(sentence)
        except BaseException as exc:  # reported on the page by the script thread
            self._done.put(exc)
            while self._tokens.get() is not None:  # drain so tee never blocks
                pass

    def tee(self, tokens: Iterable[str]) -> Iterator[str]:
        try:
            for token in tokens:
                self._tokens.put(token)
                yield token
        finally:
            self._tokens.put(None)  # end of the answer (also when the reader stops early)

    def _drain(self) -> list[SpokenSentence | BaseException]:
        import queue

        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def ready(self) -> list[SpokenSentence | BaseException]:
        """Sentences (or an error) finished since the last call; never blocks."""
        return self._drain()

    def finish(self, timeout: float = 600) -> list[SpokenSentence | BaseException]:
        """Wait for the last sentences after the answer ended."""
        self._thread.join(timeout)
        return self._drain()
