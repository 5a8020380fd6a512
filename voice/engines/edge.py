"""edge-tts: Microsoft's online neural voices, with word boundaries for subtitles.

The text is sent to Microsoft's service, so `auto` picks this engine only when the person allows
it (settings.online_voice; see voice/policy.py).
"""
from __future__ import annotations

import asyncio
import threading

from voice.audio import Speech, Timing, VoiceError, decode_audio
from voice.engine import TTS_ENGINES, TTSEngine


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

