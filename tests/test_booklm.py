"""The third pass after recognition (voice/booklm.py): characters re-read with a model of her book.

A small book written here (not quoted from the novel) stands in for 红楼梦: the model is real (counts,
Witten-Bell, jieba's real dictionary), only the book is short."""
from __future__ import annotations

import pytest

from voice.booklm import BookLM, near
from voice.correction import BookWords, correct

BOOK = "\n".join([
    "李纨住在稻香村，宝玉住在怡红院，黛玉住在潇湘馆。",
    "鹦哥挂在廊下，廊下的鹦哥学着说话。丫头们在廊下说话。",
    "宝钗的金锁上有八个字，金锁是和尚给的。",
    "紫鹃说姑娘夜里咳嗽，咳嗽了一夜。",
    "他叫他们都去，他又叫他回来。",
    "屋里的陈设十分朴素，陈设不多。",
] * 4)


@pytest.fixture(scope="module")
def lm() -> BookLM:
    return BookLM.mine(BOOK)


def test_near_syllables_are_the_known_confusions():
    assert near("shou", "shuo") and near("cheng", "chen") and near("song", "sou") and near("zhu", "zu")
    assert not near("shou", "shou")  # the same syllable is not "near": it costs nothing more
    assert not near("ba", "pa") and not near("shou", "hua")


def test_characters_become_the_books_where_they_make_its_words(lm):
    assert lm.fix_run("李纨柱再稻香村") == "李纨住在稻香村"  # same sounds, other characters
    assert lm.fix_run("鹦哥挂在狼下") == "鹦哥挂在廊下"
    assert lm.fix_run("宝钗的金索") == "宝钗的金锁"
    # Near syllables cost more and still win where the book is clear: song/sou, shou/shuo, cheng/chen
    # (城 is not in this book: a heard syllable need not be).
    assert lm.fix_run("姑娘夜里可送") == "姑娘夜里咳嗽"
    assert lm.fix_run("丫头们在廊下收花") == "丫头们在廊下说话"
    assert lm.fix_run("屋里的城设") == "屋里的陈设"


def test_speech_off_the_book_stays_as_heard(lm):
    for heard in ("请把桌上的茶杯递给我", "今天天气很好我们一起去散步吧", "火车站离这里不太远"):
        assert lm.fix_run(heard) == heard


def test_she_is_never_made_he(lm):
    # The book writes 他 for everyone (as 红楼梦 does for women too): which one a person meant is theirs.
    assert lm.fix_run("她叫她们都去") == "她叫她们都去"


def test_kept_characters_stay(lm):
    assert lm.fix_run("李纨柱再稻香村", [False, False, True, True, False, False, False]) == "李纨柱再稻香村"


def test_a_change_that_makes_no_word_is_undone():
    # The book writes 竹子再 often, but 子再 is no word (a pair at chance: 子 and 再 are everywhere).
    book = "竹子再长。孩子再来。帽子再戴。" * 5 + "再说再看再想再去。" * 20 + "子女子孙子弟子侄。" * 20
    lm = BookLM.mine(book)
    assert not lm._wordlike("子再")
    assert lm.fix_run("竹子在风里") == "竹子在风里"


def test_odd_input_is_left_alone(lm):
    assert lm.fix_run("") == "" and lm.fix_run("住") == "住"
    assert BookLM.mine("").fix_run("李纨柱再稻香村") == "李纨柱再稻香村"  # an empty book knows no words


def test_the_book_words_pass_runs_the_model_and_keeps_names():
    words = BookWords.mine([BOOK], ["紫鹃", "李纨"])
    assert words.lm is not None
    assert correct("李完柱再稻香村。", ["李纨"], "zh", words) == "李纨住在稻香村。"  # the name, then the model
    assert correct("姑娘夜里可送。", ["紫鹃"], "zh", words) == "姑娘夜里咳嗽。"
    assert correct("Chu zai.", [], "en", words) == "Chu zai."
