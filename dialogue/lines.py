"""A character's lines in a text, each paired with what was said or narrated just before it.

Used twice: fine-tuning data (finetune/) and, at serving time, the character's own lines among the
retrieved passages (ragchat). A quotation is given to the character only when a speech tag names
her as the subject (or, in English, when a "she" tag can only mean her); untagged lines are left
out: precision matters more than recall, since a wrong line teaches someone else's voice.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from dialogue import en, zh  # noqa: F401  (register the attributors)
from dialogue.attribution import ATTRIBUTORS, Attribution
from dialogue.segments import Segment, segment, split_paragraphs
from language import detect_lang


@dataclass
class Line:
    """One utterance of the character with what was said or narrated just before it."""

    output: str
    input: str
    alias: str
    method: str
    source: str
    offset: int  # where the utterance starts in the source text
    input_kind: str = "line"  # line (someone's speech) | narration
    context: str = field(default="", repr=False)  # the surrounding text, for checking by hand


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _narration_window(text: str, start: int, end: int, limit: int) -> str:
    """The last ``limit`` characters of narration before a line, cut at a sentence start when possible."""
    chunk = _clean(text[max(start, end - limit * 2):end])
    chunk = re.sub(r"[“”\"「」]", "", chunk)
    if len(chunk) > limit:
        chunk = chunk[-limit:]
        m = re.search(r"[。！？.!?]\s*", chunk)
        if m and m.end() < len(chunk) - 10:
            chunk = chunk[m.end():]
    return chunk.strip(" ，,：:")


def extract_lines(text: str, aliases: list[str], source: str = "", language: str | None = None,
                  max_input: int = 200) -> list[Line]:
    """Every line the character speaks in ``text``, paired with what came just before, in book order."""
    if not aliases:
        raise ValueError("no names to look for; give the character's name with --alias NAME")
    language = language or detect_lang(text)
    attributor = ATTRIBUTORS.create(language, aliases=list(aliases), text=text)
    pars = [segment(s, p) for s, p in split_paragraphs(text)]
    # All quotations of the book, in order, with the target's marked.
    quotes: list[tuple[int, int, Segment, Attribution | None]] = []
    for k, par in enumerate(pars):
        own = attributor.attribute(pars, k)
        for qi in par.quotes:
            quotes.append((k, qi, par.segments[qi], own.get(qi)))
    lines: list[Line] = []
    last_own_end = 0
    i = 0
    while i < len(quotes):
        k, qi, seg, attr = quotes[i]
        if attr is None:
            i += 1
            continue
        # Join her quotations that follow on with only a short tag between ("…," said she, "…").
        parts, end, j = [seg.text], seg.end, i + 1
        # English gives a paragraph to one speaker, so her pieces of it are one utterance however long the tag.
        gap = 10**9 if language == "en" else 40
        while j < len(quotes) and quotes[j][3] is not None and quotes[j][0] == k \
                and quotes[j][2].start - end <= gap:
            parts.append(quotes[j][2].text)
            end = quotes[j][2].end
            j += 1
        utterance = _clean(("" if language == "zh" else " ").join(p.strip() for p in parts))
        if language == "en":
            utterance = re.sub(r",$", ".", utterance)  # "…," said she: the comma belongs to the tag
        window_start = max(last_own_end, seg.start - 1500)
        before = [q for q in quotes[:i] if q[2].end <= seg.start and q[2].start >= window_start and q[3] is None]
        if before and seg.start - before[-1][2].end < 600:
            last = before[-1]
            # English gives a paragraph to one speaker: her whole speech is the prompt, not its last piece.
            group = [q for q in before if q[0] == last[0]] if language == "en" else [last]
            prompt, kind = _clean(" ".join(q[2].text.strip() for q in group)), "line"
        else:
            prompt, kind = _narration_window(text, window_start, seg.start - 1, max_input), "narration"
        ctx = text[max(0, seg.start - 300):min(len(text), end + 150)]
        if utterance and prompt and re.search(r"\w", utterance):
            lines.append(Line(utterance, prompt[-max_input * 3:], attr.alias, attr.method, source,
                              seg.start, kind, ctx))
        last_own_end = end
        i = j
    return lines


def dedupe(lines: Iterable[Line]) -> list[Line]:
    """Drop repeated utterances (same words, ignoring spacing and punctuation), keeping the first."""
    seen: set[str] = set()
    out: list[Line] = []
    for line in lines:
        key = re.sub(r"[\W_]+", "", line.output.lower())
        if key and key not in seen:
            seen.add(key)
            out.append(line)
    return out

