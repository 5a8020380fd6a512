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
from functools import lru_cache

import numpy as np

log = logging.getLogger("persona")

THRESHOLD = 0.6  # cosine to the nearest bank sentence


@lru_cache(maxsize=8)
def _bank(sentences: tuple[str, ...]) -> np.ndarray:
    from persona.scenes import _embed  # the embedder her lines are compared with (USE; it locks itself)

    return _embed(list(sentences))


def closeness(sentence: str, bank: tuple[str, ...]) -> float:
    """Cosine of ``sentence`` to the nearest bank sentence (0.0 with no bank, or when USE cannot load)."""
    if not bank or not sentence.strip():
        return 0.0
    from persona.scenes import embed_question

    try:
        return float(np.max(_bank(bank) @ embed_question(sentence)))
    except Exception as exc:  # no embedder: the word lists still guard
        log.warning("assistant-tone check off (%s)", exc)
        return 0.0


def judge(bank: tuple[str, ...], threshold: float = THRESHOLD):  # -> Callable[[str], bool]
    """A sentence test for guard.Rules.tone: True when the sentence sounds like the bank's assistant."""
    return lambda sentence: closeness(sentence, bank) >= threshold
