"""Her memory of the reader (conversations/memory.py) and the summary of a long conversation (prompting.py):
what is distilled, what is recalled for a question, where it goes in the prompt, and that it never crosses
readers or characters. Turns run the tiny random Qwen2 over a small real store (its words are noise)."""
# ruff: noqa: F811  (pytest fixtures imported from other test files are redefined as arguments)
from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from conversations import ConversationStore, Recall, distil_rules, open_or_create
from conversations import memory as mem
from ragchat import Budget, Companion, count_tokens
from tests.test_ragchat import Recorder, tiny_llm, zh_store  # noqa: F401  (pytest fixtures)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

TOLD = [  # (what the reader says, the memories expected, their kinds)
    ("我叫小雨，今天第一次来潇湘馆。", ["我叫小雨", "我今天第一次来潇湘馆"], ["name", "news"]),
    ("我最喜欢栀子花，因为它很香。", ["我最喜欢栀子花"], ["like"]),
    ("我最近很担心下个月的考试。", ["我最近很担心下个月的考试"], ["worry"]),
    ("我在上海的一家医院工作，养了一只橘猫。", ["我在上海的一家医院工作", "我养了一只橘猫"], ["about", "about"]),
    ("我不喜欢下雨天。", ["我不喜欢下雨天"], ["dislike"]),
    ("我养了一只橘猫，名叫元宝，胖得很。", ["我养了一只橘猫，名叫元宝，胖得很"], ["about"]),  # the name is the cat's
    ("My name is Tom Baker, and I love gardenias.", ["My name is Tom Baker", "I love gardenias"], ["name", "like"]),
    ("I am so worried about my mother's health.", ["I am so worried about my mother's health"], ["worry"]),
    ("I just passed my driving test!", ["I just passed my driving test"], ["news"]),
    ("I work as a nurse in Leeds.", ["I work as a nurse in Leeds"], ["about"]),
]
NOT_TOLD = ["你还记得我叫什么吗？", "宝玉是谁？", "我叫紫鹃去倒茶。", "如果我喜欢你怎么办", "你喜欢什么花？",
            "Do you remember what I love?", "If I loved him, would it matter?", "How do you like Mr. Darcy?",
            "I think you are right.", "What is your name?"]


@pytest.fixture
def db(zhiyin_home: Path) -> ConversationStore:
    return ConversationStore(zhiyin_home / "conversations.db")


# ---------------------------------------------------------------------------- distil
@pytest.mark.parametrize(("said", "texts", "kinds"), TOLD)
def test_rules_distil_what_the_reader_says_about_themselves(said: str, texts: list[str], kinds: list[str]) -> None:
    facts = distil_rules(said)
    assert [f.text for f in facts] == texts and [f.kind for f in facts] == kinds


@pytest.mark.parametrize("said", NOT_TOLD)
def test_questions_hypotheticals_and_remarks_are_not_memories(said: str) -> None:
    assert distil_rules(said) == []


def test_the_model_distiller_keeps_only_what_the_reader_said() -> None:
    class Lister:  # a stand-in for the chat model (named fake): answers the distil prompt with a list
        def invoke(self, messages, **kw):  # noqa: ANN001, ANN003
            from langchain_core.messages import AIMessage

            assert "我最喜欢栀子花" in messages[0].content and kw["temperature"] == 0
            return AIMessage("- 我叫小雨\n2. 我最喜欢栀子花\n我叫阿明\n无")  # 阿明: the prompt's own example

    distil = mem.DISTILLERS.create("model")
    assert [(f.kind, f.text) for f in distil("我叫小雨，我最喜欢栀子花", llm=Lister(), lang="zh")] == \
        [("name", "我叫小雨"), ("like", "我最喜欢栀子花")]
    assert sorted(mem.DISTILLERS.names()) == ["model", "rules"]


# ----------------------------------------------------------------------------- store
def test_a_new_name_replaces_the_old_and_duplicates_are_kept_once(db: ConversationStore) -> None:
    mem.remember(db, "r", "daiyu", distil_rules("我叫小雨。我最喜欢栀子花。"))
    mem.remember(db, "r", "daiyu", distil_rules("我最喜欢栀子花。叫我阿青就好。"))
    assert [(m.kind, m.text) for m in db.memories("r", "daiyu")] == [("like", "我最喜欢栀子花"), ("name", "叫我阿青就好")]


def test_memories_are_capped_per_reader_and_character(db: ConversationStore, monkeypatch) -> None:
    monkeypatch.setattr(mem, "MAX_MEMORIES", 5)
    for i in range(8):
        mem.remember(db, "r", "daiyu", [mem.Fact("about", f"我养了{i}只猫")])
    assert [m.text for m in db.memories("r", "daiyu")] == [f"我养了{i}只猫" for i in range(3, 8)]


def test_correct_and_forget_touch_only_that_reader_and_character(db: ConversationStore) -> None:
    for reader, character in (("a", "daiyu"), ("b", "daiyu"), ("a", "elizabeth")):
        mem.remember(db, reader, character, distil_rules("我最喜欢栀子花。我叫小雨。"))
    flower = db.memories("a", "daiyu")[0]
    db.correct_memory("b", "daiyu", flower.id, "我讨厌花")  # not b's memory: nothing happens
    db.correct_memory("a", "daiyu", flower.id, "我最喜欢茉莉花")
    assert [m.text for m in db.memories("a", "daiyu")] == ["我最喜欢茉莉花", "我叫小雨"]
    assert db.forget("b", "daiyu", flower.id) == 0
    assert db.forget("a", "daiyu") == 2 and not db.memories("a", "daiyu")
    assert len(db.memories("b", "daiyu")) == 2 and len(db.memories("a", "elizabeth")) == 2


# ---------------------------------------------------------------------------- recall
def seeded(db: ConversationStore, reader: str = "r") -> Recall:
    for said, _, _ in TOLD[:5]:
        mem.remember(db, reader, "daiyu", distil_rules(said))
    return Recall(db, reader, "daiyu")


@pytest.mark.parametrize(("question", "expected"), [
    ("你还记得我叫什么名字吗？", "我叫小雨"),
    ("你知道我最喜欢什么花吗？", "我最喜欢栀子花"),
    ("我那件担心的事，你怎么看？", "我最近很担心下个月的考试"),
    ("我家的猫最近不爱吃饭。", "我养了一只橘猫"),
])
def test_a_follow_up_recalls_what_bears_on_it_first(db: ConversationStore, question: str, expected: str) -> None:
    got = seeded(db).recall(question, budget=40, follow_up=True)
    assert got and got[0] == expected


def test_an_unrelated_follow_up_recalls_nothing_and_costs_no_tokens(db: ConversationStore) -> None:
    recall = seeded(db)
    for question in ("宝玉今天来过吗？", "你喜欢什么花？", "菊花诗会谁得了第一？", "Tell me about Jane."):
        assert recall.recall(question, budget=40, follow_up=True) == []


def test_a_first_turn_carries_the_most_relevant_within_its_budget(db: ConversationStore) -> None:
    recall = seeded(db)
    got = recall.recall("你好", budget=40, follow_up=False)
    assert got and sum(count_tokens(t) + 2 for t in got) <= 40
    everything = recall.recall("你好", budget=1000, follow_up=False)
    assert len(everything) == 7 and set(got) < set(everything)
    assert recall.recall("你好", budget=1000, follow_up=False, replayed="“我叫小雨”") == \
        [t for t in everything if t != "我叫小雨"]  # already in the conversation: not repeated


# -------------------------------------------------------------------- in the prompt
def test_memories_go_in_the_turns_own_message_and_never_cross_readers(db: ConversationStore, zh_store,
                                                                      tiny_llm) -> None:
    told = open_or_create(zh_store, "小雨", "roleplay", store=db, llm=tiny_llm())
    list(told.turn("我叫小雨，我最喜欢栀子花。"))
    rec = Recorder()
    later = open_or_create(zh_store, "小雨", "reader", store=db, llm=tiny_llm(rec))  # a later conversation
    list(later.turn("你好呀。"))
    list(later.turn("宝玉今天来过吗？"))
    list(later.turn("你还记得我最喜欢什么花吗？"))
    first, unrelated, asked = rec.calls
    assert "栀子花" not in str(first[0].content)  # never the static system head
    mine = [m for m in first if isinstance(m, HumanMessage)][-1].content
    assert "【来访者以前亲口告诉过你的话】" in mine and "“我最喜欢栀子花”" in mine and "“我叫小雨”" in mine
    assert all("栀子花" not in m.content for m in unrelated[len(first):])  # already above: not repeated
    assert [m.content for m in asked[: len(unrelated)]] == [m.content for m in unrelated]  # the prefix stays
    tokens = [m.tokens.get("memory", 0) for m in later.path() if m.role == "assistant"]
    assert tokens[0] > 0 and tokens[1] == 0 and tokens[2] > 0  # asked to remember: the memory comes again
    other = open_or_create(zh_store, "阿青", "roleplay", store=db, llm=tiny_llm(rec))
    list(other.turn("你还记得我最喜欢什么花吗？"))
    assert all("栀子花" not in str(m.content) for m in rec.calls[-1])
    elizabeth = Companion("elizabeth", llm=object())
    assert db.memories("小雨", "elizabeth") == [] and elizabeth.memory is None


def test_a_question_about_the_reader_is_answered_from_their_memories_not_the_book(db: ConversationStore, zh_store,
                                                                                 tiny_llm) -> None:
    mem.remember(db, "小雨", "daiyu", distil_rules("我叫小雨，我最喜欢栀子花。"))
    rec = Recorder()
    conv = open_or_create(zh_store, "小雨", "roleplay", store=db, llm=tiny_llm(rec))
    list(conv.turn("你还记得我叫什么名字吗？"))
    n = len(rec.calls)  # the tiny model's noise may trip the persona guard: a turn can take two calls
    list(conv.turn("雪团儿是什么？"))  # about the book again
    asked, book = ([m for m in call if isinstance(m, HumanMessage)][-1].content for call in (rec.calls[0], rec.calls[n]))
    assert "“我叫小雨”" in asked and "【书中段落】" not in asked and "照上面他以前告诉过你的话" in asked
    assert rec.calls[0][-1].content == "我记得，你"  # her answer starts from her memory of you
    assert "【书中段落】" in book
    assert conv.companion.history[0].sources == []
    # Asked again later, the memory comes again though the first turn's prompt above already had it.
    n = len(rec.calls)
    list(conv.turn("我最喜欢什么花来着，你还记得吗？"))
    again = [m for m in rec.calls[n] if isinstance(m, HumanMessage)][-1].content
    assert "“我最喜欢栀子花”" in again and "【书中段落】" not in again
    # Without memories of this reader, the same question is an ordinary turn over the book.
    stranger = open_or_create(zh_store, "阿青", "roleplay", store=db, llm=tiny_llm(rec))
    list(stranger.turn("你还记得我叫什么名字吗？"))
    assert "【书中段落】" in [m for m in rec.calls[-1] if isinstance(m, HumanMessage)][-1].content


def test_memory_off_sends_none(db: ConversationStore, zh_store, tiny_llm) -> None:
    from settings import load_settings

    mem.remember(db, "小雨", "daiyu", distil_rules("我叫小雨。"))
    conv = open_or_create(zh_store, "小雨", store=db, llm=tiny_llm(), settings=load_settings(memory=False))
    list(conv.turn("我最喜欢栀子花。你好。"))
    assert "我叫小雨" not in conv.companion.history[-1].prompt
    assert [m.text for m in db.memories("小雨", "daiyu")] == ["我叫小雨"]  # nothing new distilled either


# ------------------------------------------------------------------ long conversations
def test_dropped_turns_are_summarised_in_a_block_that_changes_only_at_a_trim(zh_store, tiny_llm) -> None:
    budget = Budget(passages=100, followup_passages=100, passage=100, examples=0, history=400, summary=200)
    rec = Recorder()
    bot = Companion(zh_store, llm=tiny_llm(rec, max_tokens=8), budget=budget, k=1)
    questions = ["黛玉给鹦鹉取的名字叫什么？", "宝玉穿的蓑衣是谁送的？", "菊花诗会谁起的社？", "黛玉夜里写了几首诗？",
                 "雪团儿会念哪句诗？", "紫鹃把架子挂在哪里？", "李纨评谁第一？", "宝钗说了什么？"]
    for q in questions:
        bot.ask(q)
    heads = [str(call[0].content) for call in rec.calls]
    summarised = [h for h in heads if "【此前谈话的摘要】" in h]
    assert summarised, "the history overflowed and the dropped turns were summarised, not lost"
    changes = [i for i, (a, b) in enumerate(zip(heads, heads[1:], strict=False)) if a != b]
    kept = [[m.content for m in after[: len(before)]] == [m.content for m in before]
            for before, after in zip(rec.calls, rec.calls[1:], strict=False)]
    assert all(not kept[i] for i in changes) and kept.count(False) == len(changes)  # only at a trim
    block = summarised[-1].split("【此前谈话的摘要】")[1]
    assert questions[bot._first_kept - 1][:10] in block  # the latest dropped question is in it
    assert count_tokens("【此前谈话的摘要】" + block) <= budget.summary
