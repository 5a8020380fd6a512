"""The TTS engine interface and its registry: each engine in voice/engines/ registers itself by name."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from registry import Registry
from voice.audio import Speech, VoiceError

VoiceArg = str | Mapping[str, str] | None


class TTSEngine(ABC):
    """One way to turn text into speech."""

    name: ClassVar[str]
    languages: ClassVar[frozenset[str]]  # the languages it speaks well: 'zh', 'en'
    online: ClassVar[bool] = False  # True: the text leaves the machine (voice/policy.py asks first)
    default_voices: ClassVar[dict[str, str]] = {}

    def voices(self) -> list[str]:
        """The voice names this engine accepts (an empty list means any name is passed through)."""
        return sorted(set(self.default_voices.values()))

    def pick_voice(self, voice: str | None, lang: str, strict: bool) -> str:
        """The voice to use: ``voice`` when this engine knows it, else the language default."""
        known = self.voices()
        if voice and (not known or voice in known):
            return voice
        if voice and strict:
            raise VoiceError(
                f"The {self.name} engine has no voice '{voice}'; choose one of: {', '.join(known)}."
            )
        return self.default_voices.get(lang) or next(iter(self.default_voices.values()), "")

    @abstractmethod
    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        """Speak ``text`` (one sentence or part of one) in ``lang``; pitch is in semitones."""


TTS_ENGINES: Registry[TTSEngine] = Registry("TTS engine")

_engines: dict[str, TTSEngine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str) -> TTSEngine:
    """The engine registered as ``name``, created once per process (models load once)."""
    with _engines_lock:
        if name not in _engines:
            _engines[name] = TTS_ENGINES.create(name)
        return _engines[name]


def voice_for_engine(voice: VoiceArg, engine: str) -> str | None:
    """The voice for ``engine`` from a name or a card's engine -> voice mapping."""
    if isinstance(voice, Mapping):
        return voice.get(engine)
    return voice
