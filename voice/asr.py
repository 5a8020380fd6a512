"""Listening: ASR engines behind one interface and a registry; Chinese comes out in simplified characters."""
from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from registry import Registry
from settings import load_settings, models_dir
from voice.audio import ASR_RATE, VoiceError, check_audible, decode_audio
from voice.correction import BookWords, context_terms, correct
from voice.models import whisper_base_path

log = logging.getLogger("voice")

ZH_PROMPT = "以下是普通话的句子。"  # steers Whisper to simplified characters and punctuation
# Whisper reads at most 223 prompt tokens, and prompt plus answer share a 448-token window: a
# 30 s window of Chinese needs ~250 for its answer, so the prompt stays under this.
MAX_PROMPT_TOKENS = 180


def whisper_prompt(language: str | None, context: str = "") -> str | None:
    """The text Whisper reads as if it came just before the speech: for Chinese the sentence that asks
    for simplified characters and punctuation, then the conversation's context (voice/priming.py)."""
    head = ZH_PROMPT if language == "zh" else ""
    text = (head + context.strip()).strip()
    return text or None


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


# A lone full-width letter or digit between Chinese characters: Whisper base's slip for a pause (孙绍祖６不到一年,
# 笑声先到６); a number it means it writes in half-width digits or in characters.
# A counted one (第６回, ６个) is a number.
_STRAY = re.compile(r"(?<=[\u4e00-\u9fff])(?<!第)[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"
                    r"(?![\uff10-\uff19\uff21-\uff3a\uff41-\uff5a0-9A-Za-z回章节个年月日号次岁点分秒天两位])")


def zh_text(text: str) -> str:
    """Whisper's Chinese as the page shows it: simplified, a stray full-width letter or digit read as the
    pause it stands for (a comma, or a full stop at the end)."""
    text = to_simplified(text)
    return _STRAY.sub(lambda m: "。" if m.end() == len(text.rstrip()) else "，", text)


class ASREngine(ABC):
    """One way to turn 16 kHz mono audio into text."""

    name: ClassVar[str]

    @abstractmethod
    def transcribe(self, audio: np.ndarray, lang: str = "auto", context: str = "") -> Transcript:
        """Recognise ``audio`` (float32, 16 kHz mono); ``lang`` is auto, zh or en; ``context`` primes
        recognition with the conversation's names and words (voice/priming.py)."""


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
    beam_size = 0  # 0: by language (BEAMS); bench/asr_bench.py sets one to compare
    # Beam 5 heard Chinese better on every set once the book's model re-reads it (0.081 -> 0.061 on the
    # name-dense sentences), ~25% slower; English primed got worse (WER 0.122 -> 0.133) and stays greedy.
    BEAMS = {"zh": 5}

    def __init__(self, model: str | Path | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise VoiceError("faster-whisper is not installed; run `pip install faster-whisper==1.2.1`.") from exc
        path = Path(model) if model else whisper_base_path()
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                  cpu_threads=load_settings().threads)
        self._lock = threading.Lock()

    def prompt_tokens(self, language: str | None, context: str = "") -> list[int] | None:
        """The prompt as token ids, cut at MAX_PROMPT_TOKENS from the end: the context is most relevant
        first, whereas faster-whisper itself would keep the end of an over-long prompt."""
        text = whisper_prompt(language, context)
        if text is None:
            return None
        ids = self.model.hf_tokenizer.encode(" " + text, add_special_tokens=False).ids
        return ids[:MAX_PROMPT_TOKENS]

    def transcribe(self, audio: np.ndarray, lang: str = "auto", context: str = "") -> Transcript:
        language = None if lang == "auto" else lang
        with self._lock:
            segments, info = self.model.transcribe(
                audio, language=language, beam_size=self.beam_size or self.BEAMS.get(language or "", 1),
                # The context goes in the prompt, not in `hotwords`: faster-whisper puts hotwords in the
                # same place (after <|startofprev|>), and both measured the same (docs/voice.md).
                initial_prompt=self.prompt_tokens(language, context),
                # Without this a misheard sentence is repeated into the next one.
                condition_on_previous_text=False, vad_filter=False,
            )
            segs = [Segment(round(s.start, 2), round(s.end, 2), s.text.strip()) for s in segments]
        detected = info.language
        if detected in {"zh", "yue"}:
            segs = [Segment(s.start_s, s.end_s, zh_text(s.text)) for s in segs]
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

    def transcribe(self, audio: np.ndarray, lang: str = "auto", context: str = "") -> Transcript:
        language = None if lang == "auto" else lang
        result = self.model.transcribe(audio, language=language, fp16=False,
                                       initial_prompt=whisper_prompt(language, context),
                                       condition_on_previous_text=False)
        detected = result.get("language") or lang
        segs = [Segment(round(s["start"], 2), round(s["end"], 2), s["text"].strip()) for s in result["segments"]]
        if detected in {"zh", "yue"}:
            segs = [Segment(s.start_s, s.end_s, zh_text(s.text)) for s in segs]
        return Transcript(_join([s.text for s in segs], detected), detected, segs, self.name,
                          round(len(audio) / ASR_RATE, 3))


def transcribe(path_or_bytes: str | Path | bytes, lang: str = "auto", engine: str = "faster-whisper",
               context: str = "", names: Iterable[str] | None = None, words: BookWords | None = None) -> Transcript:
    """Transcribe WAV/WebM/Ogg/MP3/M4A (a path or the bytes a browser sent); bad or silent audio raises VoiceError.

    ``context`` primes recognition with what the conversation is about (voice/priming.py), and the
    transcript's homophones of ``names`` (default: the names in ``context``) become those names, and
    non-words that sound like one of a book's ``words`` become that word.
    ``voice.priming.listen(audio, card, last_turn)`` does all of it for a character.
    """
    if lang not in {"auto", "zh", "en"}:
        raise VoiceError(f"Unknown language '{lang}'; use zh, en or auto.")
    if engine not in ASR_ENGINES:
        ASR_ENGINES.create(engine)  # raises UnknownName listing the engines
    audio = decode_audio(path_or_bytes, ASR_RATE)
    name = "The uploaded audio" if isinstance(path_or_bytes, (bytes, bytearray)) else f"The audio {path_or_bytes}"
    check_audible(audio, ASR_RATE, name)
    asr = get_asr(engine)
    if not context:  # called as before the context existed, so engines registered elsewhere still work
        result = asr.transcribe(audio, lang)
    else:
        result = asr.transcribe(audio, lang, context=context)
    if context or names or words is not None:
        result = with_names_restored(result, context, names, words)
    if not result.text.strip():
        raise VoiceError(f"{name} holds no speech that could be recognised; speak closer to the microphone.")
    return result


def with_names_restored(result: Transcript, context: str = "", names: Iterable[str] | None = None,
                        words: BookWords | None = None) -> Transcript:
    """The transcript with homophones of ``names`` (default: the context's) replaced by them, and
    non-words sounding like the book's ``words`` by those (voice/correction.py)."""
    lang = "zh" if result.language in {"zh", "yue"} else "en"
    terms = list(names) if names is not None else context_terms(context, lang)
    result.segments = [Segment(s.start_s, s.end_s, correct(s.text, terms, lang, words)) for s in result.segments]
    result.text = correct(result.text, terms, lang, words)
    return result
