"""The retrieval benchmark's answers really are in the books: every evidence string occurs verbatim
in its corpus (English compared with whitespace normalised, since the book is hard-wrapped)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge_base.reading import read_document

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"
SETS = ["retrieval_questions.json", "retrieval_questions_heldout.json"]  # tuning set, held-out set
BOOKS = {"hongloumeng": "hongloumeng.txt", "pride_and_prejudice": "pride_and_prejudice.txt"}


def _squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", SETS)
def test_question_file_is_well_formed(name):
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert set(BOOKS) <= set(data)
    for book in BOOKS:
        assert len(data[book]) >= 10
        for item in data[book]:
            assert set(item) >= {"q", "evidence"} and item["q"].strip()
            assert item["evidence"] and all(isinstance(e, str) and e.strip() for e in item["evidence"])


def test_the_held_out_set_shares_no_question_with_the_tuning_set():
    tuning, held = (json.loads((DATA / n).read_text(encoding="utf-8")) for n in SETS)
    for book in BOOKS:
        assert not {q["q"] for q in tuning[book]} & {q["q"] for q in held[book]}


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("book", sorted(BOOKS))
def test_every_evidence_string_is_in_the_corpus(corpus, book, name):
    text = read_document(corpus / BOOKS[book]).text
    haystack = text if book == "hongloumeng" else _squash(text)
    items = json.loads((DATA / name).read_text(encoding="utf-8"))[book]
    missing = [e for item in items for e in item["evidence"]
               if (e if book == "hongloumeng" else _squash(e)) not in haystack]
    assert not missing, f"evidence not found verbatim in {BOOKS[book]}: {missing}"
