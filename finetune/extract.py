"""Fine-tuning data from a novel: a character's lines (found by the shared dialogue/ package) written
as JSONL records in XTuner's or chat ``messages`` format, and a sample for checking by hand.

The segmentation and speaker attribution moved to dialogue/ because serving uses them too
(ragchat's "her own lines in the prompt"); the names below are re-exported so old imports work.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Protocol

from dialogue import (  # noqa: F401  (re-exported: older code imports them from here)
    ATTRIBUTORS,
    Attribution,
    ChineseAttributor,
    EnglishAttributor,
    Line,
    Paragraph,
    Segment,
    dedupe,
    extract_lines,
    mine_zh_names,
    segment,
    split_paragraphs,
)
from language import detect_lang as detect_language  # noqa: F401  (the one detector; old name)
from registry import Registry

# ---------------------------------------------------------------- reading


def read_text(path: str | Path) -> tuple[str, str]:
    """Read a book in any encoding with the knowledge base's reader (one reader for the whole app)."""
    from knowledge_base.reading import read_text as kb_read_text

    return kb_read_text(path)


def sample_for_review(lines: list[Line], n: int = 50, seed: int = 0) -> list[Line]:
    """A fixed random sample of lines for checking attribution by hand."""
    rng = random.Random(seed)
    return sorted(rng.sample(lines, min(n, len(lines))), key=lambda x: x.offset)


# ---------------------------------------------------------------- writing

class DatasetFormat(Protocol):
    """Turns one extracted line into one JSONL record."""

    def record(self, line: Line, system: str) -> dict: ...


FORMATS: Registry[DatasetFormat] = Registry("dataset format")


@FORMATS.register("xtuner")
class XTunerFormat:
    """XTuner's single-turn conversation record."""

    def record(self, line: Line, system: str) -> dict:
        return {"conversation": [{"system": system, "input": line.input, "output": line.output}]}


@FORMATS.register("messages")
class MessagesFormat:
    """OpenAI-style chat messages, as chat templates expect."""

    def record(self, line: Line, system: str) -> dict:
        return {"messages": [{"role": "system", "content": system},
                             {"role": "user", "content": line.input},
                             {"role": "assistant", "content": line.output}]}


def record_to_turns(record: dict) -> tuple[str, str, str]:
    """(system, input, output) from a record in either format."""
    if "conversation" in record:
        turn = record["conversation"][0]
        return turn.get("system", ""), turn["input"], turn["output"]
    by_role = {m["role"]: m["content"] for m in record["messages"]}
    return by_role.get("system", ""), by_role["user"], by_role["assistant"]
