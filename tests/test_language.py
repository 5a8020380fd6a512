"""One language detector and one sentence splitter for every stage that needs them."""
from __future__ import annotations

import dialogue.lines
import finetune.extract
import knowledge_base.chunking
import language
import voice.text
from sentences import split_sentences


def test_mixed_text_is_judged_by_characters_against_words() -> None:
    assert language.detect_lang("我最喜欢的书是Pride and Prejudice。") == "zh"
    assert language.detect_lang("The novel 红楼梦 is long and sad.") == "en"
    assert language.detect_lang("1234 …", default="zh") == "zh"
    assert language.detect_lang("Élise répondit à voix basse") == "en"  # accented Latin counts as Latin


def test_every_stage_uses_the_one_detector() -> None:
    for module in (voice.text, knowledge_base.chunking, dialogue.lines):
        assert module.detect_lang is language.detect_lang, module.__name__
    assert finetune.extract.detect_language is language.detect_lang


def test_dialogue_lives_outside_finetune_and_finetune_re_exports_it() -> None:
    assert finetune.extract.extract_lines is dialogue.extract_lines
    lines = dialogue.extract_lines("黛玉冷笑道：“我就知道，别人不挑剩下的也不给我。”", ["黛玉"])
    assert [line.output for line in lines] == ["我就知道，别人不挑剩下的也不给我。"]


def test_chunking_splits_english_at_full_stops_with_the_shared_splitter() -> None:
    para = "It is a truth universally acknowledged. Mr. Bennet said nothing; she went on.  Then?"
    pieces = split_sentences(para, keep_space=True)
    assert "".join(pieces) == para  # offsets and spacing survive
    assert pieces == ["It is a truth universally acknowledged. ", "Mr. Bennet said nothing; ", "she went on.  ", "Then?"]
    assert knowledge_base.chunking._sentences(para) == pieces
