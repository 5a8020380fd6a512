"""An assistant's sentence in her mouth, found by meaning, not by word.

Word lists catch 人工智能 and "How can I help", but the model says the same in words no list holds:
「我没有实际的智能，但我可以理解你的问题并给出相应的答案。」, "I can definitely help with that!",
"I apologize for any misunderstanding". Each whole sentence of a role-play answer is compared (USE,
the packaged multilingual embedder) with a small bank of typical assistant sentences in her language
(``guard.assistant_sentences`` in prompts/<lang>.yaml, which a translator edits); one as close as
``THRESHOLD`` to any of them trips the guard like an assistant phrase does.

On session 7's answers (bench/results/persona.json; docs/persona.md) the sentences read as an
assistant's scored 0.63-0.95, her own 0.15-0.42, the fallback line 0.54.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

import numpy as np

log = logging.getLogger("persona")

THRESHOLD = 0.6  # cosine to the nearest bank sentence
# A long sentence's opening is judged too. Her book's lines: none of 356 (林黛玉) / 131 (Elizabeth) openings
# reached 0.6 (max 0.55 / 0.47); docs/persona.md, session 12.
OPENING = {"en": 8, "zh": 10}


@lru_cache(maxsize=8)
def _bank(sentences: tuple[str, ...]) -> np.ndarray:
    from persona.scenes import _embed  # the embedder her lines are compared with (USE; it locks itself)

    return _embed(list(sentences))


def closeness(sentence: str, bank: tuple[str, ...]) -> float:
    """Cosine of ``sentence`` to the nearest bank sentence (0.0 with no bank, or when USE cannot load)."""
    return closeness_all([sentence], bank)[0]


def closeness_all(sentences: list[str], bank: tuple[str, ...]) -> list[float]:
    """closeness of each sentence, embedded in one call (a sentence and its opening, while she streams)."""
    scores = [0.0] * len(sentences)
    asked = [i for i, s in enumerate(sentences) if s.strip()]
    if not bank or not asked:
        return scores
    from persona.scenes import _embed

    try:
        best = (_embed([sentences[i] for i in asked]) @ _bank(bank).T).max(axis=1)
    except Exception as exc:  # no embedder: the word lists still guard
        log.warning("assistant-tone check off (%s)", exc)
        return scores
    for i, score in zip(asked, best, strict=True):
        scores[i] = float(score)
    return scores


def opening(sentence: str) -> str:
    """The first OPENING words (English) or characters (Chinese) of a long sentence ('' for a short one): an
    assistant's opener drowns in the rest of its sentence ("I am sorry if I misunderstood or misinterpreted
    your question about why I refused Mr. Bingley's proposal." 0.44 whole, its first 8 words 0.78)."""
    if not re.search(r"[\u4e00-\u9fff]", sentence):
        words = sentence.split()
        return " ".join(words[:OPENING["en"]]) if len(words) > OPENING["en"] + 2 else ""
    core = "".join(sentence.split())
    return core[:OPENING["zh"]] if len(core) > OPENING["zh"] + 4 else ""


def judge(bank: tuple[str, ...], threshold: float = THRESHOLD):  # -> Callable[[str], bool]
    """A sentence test for guard.Rules.tone: True when the sentence, or its opening, sounds like the bank's
    assistant."""
    def sounds(sentence: str) -> bool:
        head = opening(sentence)
        return max(closeness_all([sentence, head] if head else [sentence], bank)) >= threshold
    return sounds
