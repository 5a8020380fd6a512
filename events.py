"""The typed events a turn yields, in order: Sources, TextDelta..., Speech/Clip (as they are ready), Done.

The page renders them, the command line writes them to files, the API streams them.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sources:
    """The passages this turn sent to the model (empty with a warning when none matched)."""

    sources: list[dict]
    warning: str = ""
    lore: list[str] = field(default_factory=list)  # world-info entries that fired (character cards)


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer as the model wrote it (the given start of the answer comes first)."""

    text: str


@dataclass(frozen=True)
class Speech:
    """One sentence spoken: WAV bytes and its WebVTT cues."""

    index: int
    text: str
    wav: bytes
    vtt: str
    duration_s: float
    engine: str


@dataclass(frozen=True)
class Clip:
    """One sentence's talking-head video (MP4 bytes)."""

    index: int
    mp4: bytes


@dataclass(frozen=True)
class StageError:
    """A stage after generation failed (speech, video); the text goes on. ``error`` is for the log."""

    stage: str
    error: BaseException


@dataclass(frozen=True)
class Done:
    """The end of a turn: the whole answer, timings (ms) and tokens per prompt part."""

    answer: str
    sources: list[dict]
    timings: dict[str, float]
    tokens: dict[str, int]
    warning: str = ""
    model: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # prompt/completion tokens when the backend tells


Event = Sources | TextDelta | Speech | Clip | StageError | Done
