"""The sentences of the retrieved passages that bear on a question, within a token budget.

Why: an answer is usually one sentence of a ~300-character passage; sending the best sentences of
the top 10 passages gets it into the reader's 700 tokens far more often than two or three whole
passages do. Each sentence is scored by the rare question words it holds plus its similarity to the
question (its best two-sentence window's, where the store's index scored them, else USE's), with a
small bonus for higher-ranked passages. Measurements: docs/ragchat.md
("Reader accuracy, session 3") and bench/excerpt_bench.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from knowledge_base import keywords
from knowledge_base.embedders import get_embedder
from knowledge_base.store import Hit
from sentences import split_sentences

SENTENCE_EMBEDDER = "use"  # packaged, fast, and built with every store (the first index)
DENSE_WEIGHT = 0.5  # similarity's weight beside the keyword share (which runs 0..1); 0 = no embedding
RANK_BONUS = 0.3  # the top passage's sentences count 30% more, the second's 15%, ...
# Where the store's index scored each passage's two-sentence windows (EmbeddingGemma, Hit.windows), a
# sentence is scored by its best window instead of USE: the answer reached 340 tokens for 0.557 of 100
# questions against 0.525, with no sentence to embed (docs/ragchat.md, session 14). Keyword weight 0.5 there.
KEYWORD_WEIGHT = {"use": 1.0, "windows": 0.5}
# With window scores, a sentence also carries its passage's rank: RANK_PRIOR * rank / (rank + 30) is taken off
# (0.13 for the second passage, 0.57 for the sixth), so the top passages' best sentences come first and a
# lower one's only when it is clearly closer. In place of the best passage whole, this put the answer into 340
# tokens for 61 of 100 questions against 57, no set lower (`python bench/excerpt_bench.py --home DIR`;
# docs/ragchat.md, session 21).
RANK_PRIOR = 4.0


def _sentences(text: str, lang: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The sentences of a passage (English whitespace squeezed) and their (start, end) in ``text``."""
    sents, spans, start = [], [], 0
    for piece in split_sentences(text, keep_space=True):
        body = " ".join(piece.split()) if lang != "zh" else piece.strip()
        if body:
            sents.append(body)
            spans.append((start, start + len(piece)))
        start += len(piece)
    return sents, spans


@dataclass
class Excerpt:
    """Some sentences of one retrieved passage, in the passage's order ("…" marks what was left out)."""

    hit: Hit
    text: str


def _join(sents: list[str], chosen: list[int], lang: str) -> str:
    glue = "" if lang == "zh" else " "
    out = "…" if chosen[0] > 0 else ""
    for n, i in enumerate(chosen):
        if n and i != chosen[n - 1] + 1:
            out += "…"
        elif n:
            out += glue
        out += sents[i]
    return out + ("…" if chosen[-1] < len(sents) - 1 else "")


def _cut(text: str, budget: int, count: Callable[[str], int]) -> str:
    """A single over-long sentence, cut to fit (its head: that is where a clause starts)."""
    while text and count(text + "…") > budget:
        text = text[: int(len(text) * 0.9)]
    return text + "…" if text else ""


def select(
    question: str,
    hits: list[Hit],
    budget: int,
    per_passage: int,
    count: Callable[[str], int],
    idf: Callable[[str], float],
    lang: str,
    tokenize: Callable[[str], list[str]] = keywords.tokenize,
) -> list[Excerpt]:
    """The best sentences of ``hits`` (best first) for ``question``: at most ``budget`` tokens in
    all and ``per_passage`` from one passage, returned in the hits' order."""
    rows: list[tuple[int, int, str]] = []  # (hit rank, sentence index, sentence)
    split: list[list[str]] = []
    window_sims: list[float] = []
    by_windows = all(hit.windows for hit in hits)  # the active index scored each passage's windows
    for rank, hit in enumerate(hits):
        sents, spans = _sentences(hit.text, lang)
        split.append(sents)
        rows += [(rank, i, s) for i, s in enumerate(sents)]
        if by_windows:  # a sentence is as close as the best window it is part of, less its passage's rank
            prior = RANK_PRIOR * rank / (rank + 30)
            window_sims += [max((x for ws, we, x in hit.windows if ws < e and s < we), default=0.0) - prior
                            for s, e in spans]
    if not rows:
        return []
    words = set(tokenize(question))  # pass the store's own (store.tokenize) to keep its names whole
    total = sum(idf(w) for w in words) or 1.0
    bonus = [1 + RANK_BONUS / (1 + rank) for rank, _, _ in rows]
    shares = [sum(idf(w) for w in words if w in sent.lower()) / total for _, _, sent in rows]
    if by_windows:
        sims, weight, kw = np.asarray(window_sims), 1.0, KEYWORD_WEIGHT["windows"]
    elif DENSE_WEIGHT:
        emb = get_embedder(SENTENCE_EMBEDDER)
        sims, weight = emb.embed([s for _, _, s in rows]) @ emb.embed([question], query=True)[0], DENSE_WEIGHT
        kw = KEYWORD_WEIGHT["use"]
    else:
        sims, weight, kw = np.zeros(len(rows)), 0.0, KEYWORD_WEIGHT["use"]
    scored = sorted((((kw * shares[n] + weight * float(sims[n])) * bonus[n], rows[n][0], rows[n][1])
                     for n in range(len(rows))), reverse=True)

    chosen: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    cut: dict[int, str] = {}  # a lone sentence too long for the budget, cut to fit
    left = budget
    for _, rank, i in scored:
        cost = count(split[rank][i]) + 1  # +1: the "…" or the space beside it
        room = min(left, per_passage - used.get(rank, 0))
        if cost > room:
            if rank in chosen or room < 20 or left < budget:  # only the very first pick is worth cutting
                continue
            cut[rank] = ("…" if i else "") + _cut(split[rank][i], room - 1, count)
            cost = count(cut[rank])
        chosen.setdefault(rank, []).append(i)
        used[rank] = used.get(rank, 0) + cost
        left -= cost
        if left < 10:
            break
    out = []
    for rank in sorted(chosen):
        idx = sorted(chosen[rank])
        text = cut.get(rank) or _join(split[rank], idx, lang)
        out.append(Excerpt(hits[rank], text))
    return out
