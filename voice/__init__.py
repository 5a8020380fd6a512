"""Voice: the character speaks (TTS engines) and listens (ASR engines), online or fully offline.

    from voice import speak, transcribe
    speech = speak("你来了？", lang="zh")      # Speech: audio, sample_rate, timings
    speech.save_wav("out.wav"); print(speech.to_vtt())
    print(transcribe("out.wav").text)
"""
from __future__ import annotations

from voice.asr import ASR_ENGINES, ASREngine, Segment, Transcript, transcribe
from voice.audio import Speech, Timing, VoiceError, decode_audio
from voice.tts import TTS_ENGINES, TTSEngine, edge_reachable, speak, speak_stream, voice_for

__all__ = [
    "ASR_ENGINES", "ASREngine", "Segment", "Transcript", "transcribe",
    "Speech", "Timing", "VoiceError", "decode_audio",
    "TTS_ENGINES", "TTSEngine", "edge_reachable", "speak", "speak_stream", "voice_for",
]
