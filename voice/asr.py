"""Listening: ASR engines behind one interface and a registry; Chinese comes out in simplified characters."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from registry import Registry
from settings import load_settings, models_dir
from voice.audio import ASR_RATE, VoiceError, check_audible, decode_audio
from voice.models import whisper_base_path

log = logging.getLogger("voice")

ZH_PROMPT = "以下是普通话的句子。"  # steers Whisper to simplified characters and punctuation


@dataclass
class Segment:
    """A stretch of recognised speech."""

    start_s: float
    end_s: float
    text: str


@dataclass
class Transcript:
    """What was heard: the text, its language ('zh'/'en'/...), and timed segments."""

    text: str
    language: str
    segments: list[Segment] = field(default_factory=list)
    engine: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese (zhconv), for when Whisper answers in traditional characters."""
    try:
        import zhconv
    except ImportError:
        return text
    return zhconv.convert(text, "zh-cn")


class ASREngine(ABC):
    """One way to turn 16 kHz mono audio into text."""

    name: ClassVar[str]

    @abstractmethod
    def transcribe(self, audio: np.ndarray, lang: str = "auto") -> Transcript:
        """Recognise ``audio`` (float32, 16 kHz mono); ``lang`` is auto, zh or en."""


ASR_ENGINES: Registry[ASREngine] = Registry("ASR engine")
_engines: dict[str, ASREngine] = {}
_lock = threading.Lock()


def get_asr(name: str) -> ASREngine:
    """The ASR engine registered as ``name``, loaded once per process."""
    with _lock:
        if name not in _engines:
            _engines[name] = ASR_ENGINES.create(name)
        return _engines[name]


def _join(texts: list[str], language: str) -> str:
    if language in {"zh", "yue", "ja"}:
        return "".join(t.strip() for t in texts)
    return " ".join(t.strip() for t in texts if t.strip())


@ASR_ENGINES.register("faster-whisper")
class FasterWhisperEngine(ASREngine):
    """faster-whisper (CTranslate2, int8) over the packaged Whisper base."""

    name = "faster-whisper"

    def __init__(self, model: str | Path | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise VoiceError("faster-whisper is not installed; run `pip install faster-whisper==1.2.1`.") from exc
        path = Path(model) if model else whisper_base_path()
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                  cpu_threads=load_settings().threads)
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, lang: str = "auto") -> Transcript:
        language = None if lang == "auto" else lang
        with self._lock:
            segments, info = self.model.transcribe(
                audio, language=language, beam_size=1,
                initial_prompt=ZH_PROMPT if language == "zh" else None,
                # Without this a misheard sentence is repeated into the next one.
                condition_on_previous_text=False, vad_filter=False,
            )
            segs = [Segment(round(s.start, 2), round(s.end, 2), s.text.strip()) for s in segments]
        detected = info.language
        if detected in {"zh", "yue"}:
            segs = [Segment(s.start_s, s.end_s, to_simplified(s.text)) for s in segs]
        return Transcript(_join([s.text for s in segs], detected), detected, segs, self.name,
                          round(len(audio) / ASR_RATE, 3))


@ASR_ENGINES.register("openai-whisper")
class OpenAIWhisperEngine(ASREngine):
    """openai-whisper over a local ``.pt`` file in checkpoints/whisper/ (no package ships one)."""

    name = "openai-whisper"

    def __init__(self, model: str | Path | None = None) -> None:
        path = Path(model) if model else self.find_weights()
        if path is None:
            raise VoiceError(
                f"openai-whisper needs its .pt weights in {models_dir() / 'whisper'} (e.g. base.pt; "
                "no package ships them); copy them there or use the faster-whisper engine."
            )
        try:
            import whisper
        except ImportError as exc:
            raise VoiceError("openai-whisper is not installed; run `pip install openai-whisper`.") from exc
        self.model = whisper.load_model(str(path), device="cpu")

    @staticmethod
    def find_weights() -> Path | None:
        """The first Whisper .pt file under the models dir (checkpoints/whisper/*.pt or checkpoints/whisper*.pt)."""
        base = models_dir()
        candidates = sorted((base / "whisper").glob("*.pt")) + sorted(base.glob("whisper*.pt"))
        return candidates[0] if candidates else None

    def transcribe(self, audio: np.ndarray, lang: str = "auto") -> Transcript:
        language = None if lang == "auto" else lang
        result = self.model.transcribe(audio, language=language, fp16=False,
                                       initial_prompt=ZH_PROMPT if language == "zh" else None,
                                       condition_on_previous_text=False)
        detected = result.get("language") or lang
        segs = [Segment(round(s["start"], 2), round(s["end"], 2), s["text"].strip()) for s in result["segments"]]
        if detected in {"zh", "yue"}:
            segs = [Segment(s.start_s, s.end_s, to_simplified(s.text)) for s in segs]
        return Transcript(_join([s.text for s in segs], detected), detected, segs, self.name,
                          round(len(audio) / ASR_RATE, 3))


def transcribe(path_or_bytes: str | Path | bytes, lang: str = "auto", engine: str = "faster-whisper") -> Transcript:
    """Transcribe WAV/WebM/Ogg/MP3/M4A (a path or the bytes a browser sent); bad or silent audio raises VoiceError."""
    if lang not in {"auto", "zh", "en"}:
        raise VoiceError(f"Unknown language '{lang}'; use zh, en or auto.")
    if engine not in ASR_ENGINES:
        ASR_ENGINES.create(engine)  # raises UnknownName listing the engines
    audio = decode_audio(path_or_bytes, ASR_RATE)
    name = "The uploaded audio" if isinstance(path_or_bytes, (bytes, bytearray)) else f"The audio {path_or_bytes}"
    check_audible(audio, ASR_RATE, name)
    result = get_asr(engine).transcribe(audio, lang)
    if not result.text.strip():
        raise VoiceError(f"{name} holds no speech that could be recognised; speak closer to the microphone.")
    return result
