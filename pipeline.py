"""One turn, end to end: text → retrieve → generate → speak → animate.

    pipe = build_pipeline("daiyu", mode="reader", speak=True, video=False)
    for event in pipe.turn("黛玉为什么要葬花？"):   # events.py: Sources, TextDelta, Speech, Clip, Done
        ...

``build_pipeline`` is the one place that wires the stages; read it top to bottom:

    retrieve + generate   ragchat.Companion (knowledge_base store → prompting → llm backend)
    speak                 VoiceStage (voice/: the character's TTS engine and voice)
    animate               FaceStage (talking_head/: her portrait, lip-synced)

Speech and video run in worker threads beside generation: the first sentence is spoken
while the rest is still being written, and a slow stage never stalls the text (it only
delays its own events, which are yielded as they become ready and drained at the end).
"""
from __future__ import annotations

import io
import queue
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.language_models import BaseChatModel

from characters import Card, avatar_path, load_card
from events import Clip, Done, Event, Speech, StageError, TextDelta
from ragchat import ChatError, Companion
from settings import Settings, load_settings

_END = object()


@dataclass
class VoiceStage:
    """Speaks a token stream sentence by sentence in the character's voice."""

    card: Card
    engine: str = "auto"

    def sentences(self, tokens: Iterable[str]) -> Iterator[Any]:
        from voice import speak_stream, voice_for

        engine_voice = voice_for(self.card, self.engine) if self.engine != "auto" else None
        yield from speak_stream(tokens, lang=self.card.lang, engine=self.engine,
                                voice=engine_voice or self.card.voice or None)


@dataclass
class FaceStage:
    """Renders her portrait saying one sentence (``head`` is a talking_head.TalkingHead)."""

    head: Any
    lock: threading.Lock

    def render(self, wav: bytes) -> bytes:
        import soundfile as sf

        samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
        with tempfile.TemporaryDirectory(prefix="zhiyin-clip-") as tmp:
            out = Path(tmp) / "clip.mp4"
            with self.lock:  # a TalkingHead carries a clock (blinks continue across sentences)
                self.head.render((samples, rate), out)
            return out.read_bytes()


class _Workers:
    """The speech thread (tokens → Speech) and the video thread (Speech → Clip) of one turn."""

    def __init__(self, voice: VoiceStage, face: FaceStage | None, t0: float) -> None:
        self.t0 = t0
        self.tokens: queue.Queue = queue.Queue()
        self.out: queue.Queue = queue.Queue()
        self.to_face: queue.Queue = queue.Queue()
        self.first: dict[str, float] = {}
        self.threads = [threading.Thread(target=self._speak, args=(voice,), daemon=True)]
        if face is not None:
            self.threads.append(threading.Thread(target=self._animate, args=(face,), daemon=True))
        for t in self.threads:
            t.start()

    def _mark(self, what: str) -> None:
        self.first.setdefault(what, round((time.perf_counter() - self.t0) * 1000, 1))

    def _speak(self, voice: VoiceStage) -> None:
        try:
            for i, speech in enumerate(voice.sentences(iter(self.tokens.get, _END))):
                event = Speech(i, speech.text, speech.wav_bytes(), speech.to_vtt(), round(speech.duration_s, 2),
                               speech.engine)
                self._mark("first_audio_ms")
                self.out.put(event)
                self.to_face.put(event)
        except BaseException as exc:  # reported as an event; the text goes on
            self.out.put(StageError("speech", exc))
            while self.tokens.get() is not _END:  # drain so feeding never blocks
                pass
        finally:
            self.to_face.put(_END)

    def _animate(self, face: FaceStage) -> None:
        failed = False
        for speech in iter(self.to_face.get, _END):
            if failed:
                continue
            try:
                clip = Clip(speech.index, face.render(speech.wav))
                self._mark("first_video_ms")
                self.out.put(clip)
            except BaseException as exc:
                failed = True
                self.out.put(StageError("video", exc))

    def feed(self, text: str) -> None:
        self.tokens.put(text)

    def close(self) -> None:
        self.tokens.put(_END)

    def ready(self) -> Iterator[Event]:
        """What finished since the last call; never blocks."""
        while True:
            try:
                yield self.out.get_nowait()
            except queue.Empty:
                return

    def finish(self, timeout: float = 600) -> Iterator[Event]:
        """Wait for the last sentences (and clips) after the answer ended."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        yield from self.ready()


class Pipeline:
    """A conversation whose turns are spoken and animated when those stages are on."""

    def __init__(self, companion: Companion, voice: VoiceStage | None = None, face: FaceStage | None = None) -> None:
        self.companion = companion
        self.voice = voice
        self.face = face if voice is not None else None  # a clip needs a sentence's speech

    @property
    def card(self) -> Card:
        return self.companion.card

    def turn(self, question: str, callbacks: Callbacks = None, **sampling: Any) -> Iterator[Event]:
        """Answer ``question``: Sources, TextDeltas with Speech/Clip events as they are ready, then Done."""
        t0 = time.perf_counter()
        workers = _Workers(self.voice, self.face, t0) if self.voice is not None else None
        done: Done | None = None
        inner = self.companion.turn(question, callbacks=callbacks, **sampling)
        try:
            for event in inner:
                if isinstance(event, Done):
                    done = event  # held back until speech and video are finished
                    continue
                if workers is not None and isinstance(event, TextDelta):
                    workers.feed(event.text)
                yield event
                if workers is not None:
                    yield from workers.ready()
        finally:
            inner.close()  # a reader who stopped early: the companion keeps what was shown
            if workers is not None:
                workers.close()
        if workers is not None:
            yield from workers.finish()
        if done is not None:
            timings = dict(done.timings, **(workers.first if workers else {}))
            timings["end_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            yield replace(done, timings=timings)


def build_pipeline(
    character: str | Card,
    mode: str = "reader",
    settings: Settings | None = None,
    *,
    llm: BaseChatModel | None = None,
    speak: bool = False,
    video: bool = False,
    head: Any = None,
    head_lock: threading.Lock | None = None,
    k: int | None = None,
) -> Pipeline:
    """Wire the stages for one character. ``llm`` and ``head`` let a server share loaded models."""
    settings = settings or load_settings()
    card = character if isinstance(character, Card) else load_card(character)
    # text → retrieve → generate: her store, the prompt, the chat model (loaded on first use if not given)
    companion = Companion(card, mode=mode, llm=llm, settings=settings, k=k)
    # → speak: her voice
    voice = VoiceStage(card, settings.tts_engine) if speak else None
    # → animate: her portrait
    face = None
    if speak and video:
        if head is None:
            portrait = avatar_path(card)
            if portrait is None:
                raise ChatError(f"{card.name} has no portrait, so no video; add one on the Knowledge page.")
            from talking_head import TalkingHead

            head = TalkingHead(str(portrait), size=settings.video_size)
        face = FaceStage(head, head_lock or threading.Lock())
    return Pipeline(companion, voice, face)
