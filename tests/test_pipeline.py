"""pipeline.py: a whole turn as typed events; speech runs beside generation and never stalls the text."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from characters import load_card
from events import Clip, Done, Sources, Speech, StageError, TextDelta
from pipeline import FaceStage, Pipeline, VoiceStage, build_pipeline
from tests.conftest import REPO
from tests.test_ragchat import tiny_llm, zh_store  # noqa: F401  (pytest fixtures)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


class ScriptedGeneration:
    """A stand-in for the generation stage (named fake): yields a fixed answer, ``delay`` seconds a piece
    after the first sentence, like a model writing on a busy CPU."""

    def __init__(self, pieces: list[str], delay: float = 0.0) -> None:
        self.pieces, self.delay, self.card = pieces, delay, load_card("elizabeth")

    def turn(self, question: str, callbacks=None, **kw) -> Iterator:  # noqa: ANN001, ANN003
        yield Sources([], "")
        for i, p in enumerate(self.pieces):
            if i >= 3:
                time.sleep(self.delay)
            yield TextDelta(p)
        yield Done("".join(self.pieces), [], {"first_token_ms": 1.0}, {})


@needs_espeak
def test_first_sentence_is_spoken_before_the_answer_ends() -> None:
    rest = [f"word{i} " for i in range(12)] + ["done."]
    gen = ScriptedGeneration(["I walked ", "to Netherfield", " this morning. ", *rest], delay=0.25)
    events = list(Pipeline(gen, VoiceStage(gen.card, "espeak")).turn("Why?"))
    texts = [e for e in events if isinstance(e, TextDelta)]
    speech = [e for e in events if isinstance(e, Speech)]
    # The first sentence's audio arrived while the rest of the answer was still being written.
    assert events.index(speech[0]) < events.index(texts[-1])
    assert speech[0].text.strip() == "I walked to Netherfield this morning."
    assert all(s.wav[:4] == b"RIFF" and s.duration_s > 0.3 and s.vtt.startswith("WEBVTT") for s in speech)
    done = events[-1]
    assert isinstance(done, Done) and 0 < done.timings["first_audio_ms"] <= done.timings["end_ms"]


def test_a_failing_voice_is_an_event_and_never_blocks_the_text() -> None:
    gen = ScriptedGeneration(["Hello there. ", "Again. ", "And ", "again."])
    events = list(Pipeline(gen, VoiceStage(gen.card, "no-such-engine")).turn("Hi"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello there. Again. And again."
    assert any(isinstance(e, StageError) and e.stage == "speech" for e in events)
    assert isinstance(events[-1], Done)


class SlowFace:
    """A stand-in talking head (named fake): a real MP4 is slow to render; this one takes 0.5 s a clip."""

    def render(self, audio, out) -> None:  # noqa: ANN001
        time.sleep(0.5)
        Path(out).write_bytes(b"\x00\x00\x00\x18ftypmp42")


@needs_espeak
def test_a_slow_video_stage_never_delays_the_text_or_the_speech() -> None:
    import threading

    gen = ScriptedGeneration(["One. ", "Two. ", "Three. ", "Four."])
    events = list(Pipeline(gen, VoiceStage(gen.card, "espeak"), FaceStage(SlowFace(), threading.Lock())).turn("?"))
    clips = [e for e in events if isinstance(e, Clip)]
    assert len(clips) == 4 and [c.index for c in clips] == [0, 1, 2, 3]
    last_text = max(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(events.index(c) > last_text for c in clips[1:])  # clips trail; the text never waited
    assert events[-1].timings["first_video_ms"] >= events[-1].timings["first_audio_ms"]


@needs_espeak
def test_build_pipeline_runs_a_real_turn_end_to_end(zh_store, tiny_llm) -> None:  # noqa: F811
    from settings import load_settings

    pipe = build_pipeline(zh_store, "reader", load_settings(tts_engine="espeak"), llm=tiny_llm(max_tokens=12),
                          speak=True)
    events = list(pipe.turn("黛玉给鹦鹉取的名字叫什么？"))
    assert isinstance(events[0], Sources) and events[0].sources
    assert isinstance(events[-1], Done) and events[-1].answer
    order = [type(e).__name__ for e in events]
    assert order.index("Sources") < order.index("TextDelta") < order.index("Done")
    assert pipe.companion.history[-1].answer == events[-1].answer


@needs_espeak
def test_cli_speaks_into_the_out_folder(zh_store, tiny_qwen_dir: Path, zhiyin_home: Path, tmp_path: Path) -> None:  # noqa: F811
    import os

    out = tmp_path / "out"
    env = dict(os.environ, ZHIYIN_HOME=str(zhiyin_home), ZHIYIN_LLM_BACKEND="transformers",
               ZHIYIN_LLM_MODEL=str(tiny_qwen_dir), ZHIYIN_MAX_TOKENS="12", ZHIYIN_THREADS="2",
               ZHIYIN_TTS_ENGINE="espeak", ZHIYIN_READER_TEMPERATURE="0")  # the tiny model's answer, repeatable
    proc = subprocess.run([sys.executable, str(REPO / "ragchat.py"), zh_store, "-q", "黛玉给鹦鹉取的名字叫什么？",
                           "--speak", "--out", str(out), "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    answer = (out / "01-answer.txt").read_text(encoding="utf-8").strip()
    assert answer
    wavs = sorted(out.glob("01-*.wav"))
    assert wavs and all(w.with_suffix(".vtt").is_file() for w in wavs), (answer, proc.stderr[-2000:])
    assert wavs[0].read_bytes()[:4] == b"RIFF"
