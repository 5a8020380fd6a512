"""LiveSpeech: the first sentence is spoken while the answer is still being generated."""
from __future__ import annotations

import shutil
import time

import pytest

from characters import load_card
from ui.media import LiveSpeech, SpokenSentence

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_first_sentence_is_ready_before_the_answer_ends() -> None:
    live = LiveSpeech(load_card("elizabeth"), engine="espeak")
    seen_while_streaming: list[SpokenSentence] = []

    def slow_answer():
        yield from ["I walked ", "to Netherfield", " this morning. "]
        # Give the worker time to speak the finished sentence before the next token arrives.
        deadline = time.monotonic() + 30
        while not seen_while_streaming and time.monotonic() < deadline:
            seen_while_streaming.extend(x for x in live.ready() if isinstance(x, SpokenSentence))
            time.sleep(0.05)
        yield from ["My stockings ", "were dirty."]

    tokens = list(live.tee(slow_answer()))
    rest = [x for x in live.finish(timeout=60) if isinstance(x, SpokenSentence)]
    assert "".join(tokens) == "I walked to Netherfield this morning. My stockings were dirty."
    assert [s.text.strip() for s in seen_while_streaming] == ["I walked to Netherfield this morning."]
    assert [s.text.strip() for s in rest] == ["My stockings were dirty."]
    assert all(s.wav[:4] == b"RIFF" and s.duration_s > 0.3 for s in seen_while_streaming + rest)


def test_errors_in_the_worker_reach_the_page_and_never_block_the_stream() -> None:
    live = LiveSpeech(load_card("elizabeth"), engine="no-such-engine")
    tokens = list(live.tee(iter(["Hello there. ", "Again."])))
    items = live.finish(timeout=30)
    assert tokens == ["Hello there. ", "Again."]
    assert any(isinstance(x, BaseException) for x in items)
