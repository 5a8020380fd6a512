"""Nothing leaves the machine unless the person says so: `auto` speaks offline by default, and
edge-tts (Microsoft's online voices) comes first only with online_voice on."""
from __future__ import annotations

import numpy as np
import pytest

import voice
from characters import load_card
from voice import policy, tts
from voice.audio import Speech


@pytest.fixture
def network_watch(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record every attempt to reach edge-tts's service (its probe and its Communicate) and refuse it."""
    import edge_tts

    calls: dict[str, list] = {"probe": [], "communicate": []}

    def probe(timeout: float = policy.EDGE_PROBE_TIMEOUT_S) -> bool:
        calls["probe"].append(timeout)
        return True  # as if the service were reachable: only consent may keep the text here

    class RefusingCommunicate:
        def __init__(self, text: str, *a, **k) -> None:  # type: ignore[no-untyped-def]
            calls["communicate"].append(text)
            raise AssertionError(f"edge-tts was asked to speak {text!r}")

    monkeypatch.setattr(policy, "edge_reachable", probe)
    monkeypatch.setattr(edge_tts, "Communicate", RefusingCommunicate)
    policy.reset_edge_probe()
    yield calls
    policy.reset_edge_probe()


class FakeEdgeService:
    """A fake of edge-tts's online synthesis (there is no network here): a tone, and the voice it was asked for."""

    asked: list[tuple[str, str]] = []

    def synthesize(self, text: str, lang: str, voice: str, rate: float = 1.0,  # type: ignore[no-untyped-def]
                   pitch: float = 0.0, volume: float = 1.0) -> Speech:
        FakeEdgeService.asked.append((text, voice))
        tone = 0.3 * np.sin(np.linspace(0, 800, 24000)).astype(np.float32)
        return Speech(tone, 24000, text, "edge", [])


def test_default_settings_never_choose_an_engine_that_needs_the_network(network_watch) -> None:  # type: ignore[no-untyped-def]
    lizzy = load_card("elizabeth")
    sp = voice.speak("Good morning, Mr. Darcy.", engine="auto", voice=dict(lizzy.voice))
    streamed = list(voice.speak_stream(iter(["How do ", "you do? ", "Very well."]), engine="auto"))
    assert sp.engine == "piper" and {s.engine for s in streamed} == {"piper"}
    assert network_watch == {"probe": [], "communicate": []}  # not even a reachability probe


def test_online_voice_on_chooses_edge_first_with_the_cards_voice(network_watch, zhiyin_home,  # type: ignore[no-untyped-def]
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (zhiyin_home / "settings.toml").write_text("online_voice = true\n", encoding="utf-8")
    monkeypatch.setattr(tts.EdgeEngine, "synthesize", FakeEdgeService.synthesize)
    FakeEdgeService.asked.clear()
    lizzy = load_card("elizabeth")
    sp = voice.speak("Good morning, Mr. Darcy.", engine="auto", voice=dict(lizzy.voice))
    assert sp.engine == "edge"
    assert FakeEdgeService.asked == [("Good morning, Mr. Darcy.", "en-GB-SoniaNeural")]
    assert network_watch["probe"]  # allowed: the service's reachability is checked first


def test_online_voice_can_also_come_from_the_environment_or_the_call(network_watch, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tts.EdgeEngine, "synthesize", FakeEdgeService.synthesize)
    assert voice.speak("Hello there.", engine="auto", online=True).engine == "edge"
    monkeypatch.setenv("ZHIYIN_ONLINE_VOICE", "1")
    assert voice.speak("Hello there.", engine="auto").engine == "edge"
    assert voice.speak("Hello there.", engine="auto", online=False).engine == "piper"
