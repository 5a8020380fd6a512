"""ragchat.py: the retrieval chain streams, cites, keeps its prompt prefix stable and inside budgets.

Chain mechanics run the tiny random Qwen2 (tests/tiny_model.py, transformers backend) over small
real knowledge stores built here with the USE embedder; its words are noise, so these tests check
what the chain sends and records, not what the model says. One slow test asks the packaged
default GGUF a reader question whose answer is a made-up fact that only the passage holds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.retrievers import BaseRetriever
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

import llm
import prompting
import ragchat
from knowledge_base.builder import build
from events import Done, Sources, TextDelta
from ragchat import Budget, ChatError, Companion, count_tokens
from settings import load_settings
from tests.conftest import REPO
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

# An original short "chapter book" in the novel's manner (not the novel's text), with lines
# that 黛玉 speaks, so retrieval, chapters and the character's own lines all have something to find.
ZH_BOOK = """第一回　潇湘馆新来一只鹦鹉

这日紫鹃从外头提进一只白鹦鹉来，说是林姑老爷旧日的门生从扬州托人捎来的。那鹦鹉通身雪白，只有头顶一撮黄毛。
黛玉看了半日，笑道：“它这样白，倒像一团雪似的，就叫它雪团儿罢。”紫鹃便把架子挂在月洞窗外竹子底下。
自此黛玉每日教它念诗，不上半月，雪团儿竟会念“侬今葬花人笑痴”一句，众人都说奇。

第二回　秋夜听雨写诗

到了秋天，连日阴雨，黛玉夜里睡不着，听着竹梢上的雨声，一连写了七首《秋窗风雨夕》的草稿，又都撕了。
宝玉冒雨来看她，披着蓑衣，戴着箬笠。黛玉笑道：“哪里来的渔翁？你这一身，倒像画儿上画的。”
宝玉说这蓑衣是北静王送的，黛玉便不肯再提，只叫雪雁剪了烛花，两人对坐说了一回闲话。

第三回　菊花诗会夺魁

重阳前后，探春起了菊花诗社，限了十二个题目，众人各拣所长。黛玉一气作了三首，李纨评定她第一。
宝钗笑道：“到底是颦儿，这三首谁也压不过。”黛玉道：“我不过胡诌几句，哪里就当得起第一。”
散了社，黛玉独自回潇湘馆，对着窗外的竹子站了许久，才叫紫鹃把新作的诗抄在花笺上收好。
"""

EN_BOOK = """Chapter 1

Elizabeth walked three miles across the muddy fields to Netherfield, because her sister Jane had
fallen ill there, and she arrived with her petticoat six inches deep in mud.

"I shall be very fit to see Jane, which is all I want," said Elizabeth, when her mother protested.

Chapter 2

At the Meryton assembly Mr. Darcy danced only with Miss Bingley and Mrs. Hurst, and declared that
Elizabeth was tolerable, but not handsome enough to tempt him.

"I could easily forgive his pride, if he had not mortified mine," said Elizabeth to Charlotte Lucas.

Chapter 3

Elizabeth kept a grey kitten named Pemberley-Puss at Longbourn, a gift from her aunt Gardiner, and
taught it to sit on the third stair of the staircase while she read.
"""


# ------------------------------------------------------------------------ fixtures
class Recorder(BaseCallbackHandler):
    """Records the messages each chat-model call receives (LangChain's own callback, not a fake)."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []
        self.params: list[dict] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        self.calls.append(list(messages[0]))
        self.params.append(kwargs.get("invocation_params") or {})


@pytest.fixture
def tiny_llm(tiny_qwen_dir: Path):  # noqa: F811
    """A factory for the tiny transformers chat model, optionally recording what it is sent."""

    def make(recorder: Recorder | None = None, max_tokens: int = 6):
        settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2,
                                 temperature=0, max_tokens=max_tokens)
        return llm.get_chat_model(settings, callbacks=[recorder] if recorder else None)

    return make


@pytest.fixture
def zh_store(tmp_path: Path) -> str:
    """The bundled 'daiyu' (her card and notes) plus the short book above, built with USE."""
    book = tmp_path / "in" / "xiaoxiang.txt"
    book.parent.mkdir()
    book.write_text(ZH_BOOK, encoding="utf-8")
    build("daiyu", [book], embedder="use")
    return "daiyu"


@pytest.fixture
def en_store(tmp_path: Path) -> str:
    book = tmp_path / "in" / "longbourn.txt"
    book.parent.mkdir()
    book.write_text(EN_BOOK, encoding="utf-8")
    build("elizabeth", [book], embedder="use")
    return "elizabeth"


class FakeEmptyRetriever(BaseRetriever):
    """A fake retriever that finds nothing (a real store always returns its nearest passages)."""

    def _get_relevant_documents(self, query: str, *, run_manager=None) -> list:
        return []


# ------------------------------------------------------------------ streaming, sources
def test_chat_streams_pieces_with_sources_chapters_and_timings(zh_store, tiny_llm) -> None:
    bot = Companion(zh_store, llm=tiny_llm(max_tokens=30))
    events = list(bot.turn("你给那只白鹦鹉取了什么名字？"))
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    bot_done = events[-1]
    assert isinstance(events[0], Sources) and isinstance(bot_done, Done) and events[0].sources == bot_done.sources
    assert len(pieces) >= 3 and all(pieces)
    assert bot.history[-1].answer == "".join(pieces).strip()
    assert bot_done.sources, "a question about the book must cite passages"
    prompt = bot.history[-1].prompt
    for s in bot_done.sources:
        assert {"n", "chapter", "source", "passage", "chunk_id", "score"} <= set(s)
        assert s["passage"] and s["passage"] in prompt  # what is cited is what was sent
    parrot = [s for s in bot_done.sources if "雪团儿" in s["passage"]]
    assert parrot and parrot[0]["chapter"].startswith("第一回") and parrot[0]["source"] == "xiaoxiang.txt"
    t = bot_done.timings
    assert set(t) == {"retrieve_ms", "first_token_ms", "first_shown_ms", "total_ms"}
    assert 0 < t["retrieve_ms"] <= t["first_token_ms"] <= t["first_shown_ms"] <= t["total_ms"]
    assert set(bot_done.tokens) == {"card", "history", "passages", "examples", "question", "memory", "summary", "lore"}
    assert bot_done.tokens["lore"] == 0  # her lorebook of facts: none of its keys in this question, nothing added


def test_roleplay_offers_the_characters_own_lines_and_reader_mode_does_not(zh_store, tiny_llm) -> None:
    bot = Companion(zh_store, mode="roleplay", llm=tiny_llm())
    bot_done = bot.ask("你给那只白鹦鹉取了什么名字？")
    prompt = bot.history[-1].prompt
    assert "【你在书中说过的话】" in prompt
    assert "就叫它雪团儿罢" in prompt.split("【你在书中说过的话】")[1]
    reader = Companion(zh_store, mode="reader", llm=tiny_llm())
    reader_done = reader.ask("你给那只白鹦鹉取了什么名字？")
    assert "【你在书中说过的话】" not in reader.history[-1].prompt and reader_done.tokens["examples"] == 0


# ------------------------------------------------------------ prefix-cache property
def test_system_prompt_is_static_and_earlier_turns_are_replayed_verbatim(zh_store, tiny_llm) -> None:
    rec = Recorder()
    bot = Companion(zh_store, llm=tiny_llm(rec))
    questions = ["黛玉给鹦鹉取的名字叫什么？", "秋天下雨的夜里黛玉写了什么？", "菊花诗会谁得了第一？"]
    for q in questions:
        bot_done = bot.ask(q)
    assert len(rec.calls) == 3
    first, second, third = rec.calls
    assert [type(m) for m in first] == [SystemMessage, HumanMessage]
    assert len({c[0].content for c in rec.calls}) == 1  # identical system prompt every turn
    # Each request begins with the whole previous request plus the answer it got: llama.cpp's
    # prefix cache then only evaluates the new turn.
    for before, after, turn in ((first, second, bot.history[0]), (second, third, bot.history[1])):
        assert [m.content for m in after[: len(before)]] == [m.content for m in before]
        assert isinstance(after[len(before)], AIMessage) and after[len(before)].content == turn.answer
        assert isinstance(after[-1], HumanMessage) and after[-1].content == bot.history[len(before) // 2].prompt
    assert questions[2] in third[-1].content


# ----------------------------------------------------------------------- budgets
@pytest.mark.parametrize("mode", ["reader", "roleplay"])
def test_every_part_of_the_prompt_stays_inside_its_budget(zh_store, tiny_llm, mode: str) -> None:
    budget = Budget(card=150, passages=160, followup_passages=90, passage=70, examples=30, followup_examples=15,
                    history=260)
    rec = Recorder()
    bot = Companion(zh_store, mode=mode, llm=tiny_llm(rec, max_tokens=10), budget=budget, k=4)
    for n, q in enumerate(["黛玉给鹦鹉取的名字叫什么？", "宝玉冒雨来时穿的是什么？", "菊花诗会谁评的第一？", "雪团儿会念哪句诗？"]):
        bot_done = bot.ask(q)
        tok = bot_done.tokens
        assert tok["card"] <= budget.card
        assert tok["passages"] <= (budget.followup_passages if n else budget.passages)
        assert tok["examples"] <= (budget.followup_examples if n else budget.examples)
        assert tok["history"] <= budget.history
        for s in bot_done.sources:
            assert count_tokens(s["passage"]) <= budget.passage
        sent = rec.calls[-1]
        # The system message is the card, then a summary of the turns the history dropped (if any).
        assert count_tokens(str(sent[0].content)) <= budget.card + tok["summary"] + 1
        assert tok["summary"] <= budget.summary
        turn = max(i for i, m in enumerate(sent) if isinstance(m, HumanMessage))  # a prefill may follow it
        assert sum(count_tokens(str(m.content)) for m in sent[1:turn]) <= budget.history
    # A real passage is longer than 70 tokens: trimming happened, around the matched words.
    assert any(s["passage"].startswith("…") or s["passage"].endswith("…") for t in bot.history for s in t.sources)


def test_reader_sends_sentence_excerpts_and_roleplay_whole_passages(zh_store, tiny_llm) -> None:
    budget = Budget(passages=160, passage=70)
    q = "黛玉给鹦鹉取的名字叫什么？"
    reader = Companion(zh_store, mode="reader", llm=tiny_llm(), budget=budget)
    reader_done = reader.ask(q)
    roleplay = Companion(zh_store, mode="roleplay", llm=tiny_llm(), budget=budget)
    roleplay_done = roleplay.ask(q)
    for s in reader_done.sources:
        # Every piece between the "…" marks is made of whole sentences of the passage it cites.
        pieces = [p for p in s["passage"].split("…") if p]
        assert pieces and all(p in s["text"] for p in pieces)
    # Excerpts draw on more passages within the same budget than whole passages do.
    assert len(reader_done.sources) > len(roleplay_done.sources)


def test_a_readers_first_turn_keeps_its_best_passage_whole_then_excerpts_the_rest(zh_store, tiny_llm) -> None:
    q = "黛玉给鹦鹉取的名字叫什么？"
    reader = Companion(zh_store, mode="reader", llm=tiny_llm(), budget=Budget(passages=340, passage=260, lead=200))
    first = reader.ask(q).sources
    best = reader.store.search(q, k=1)[0]
    assert first[0]["chunk_id"] == best.chunk_id and count_tokens(best.text) <= 200
    assert first[0]["passage"] == best.text  # whole: it fits the lead's 200 tokens
    assert len(first) > 1 and all(s["passage"] != s["text"] for s in first[1:])  # the rest: excerpts
    plain = Companion(zh_store, mode="reader", llm=tiny_llm(), budget=Budget(passages=340, passage=260, lead=0))
    assert plain.ask(q).sources[0]["passage"] != best.text  # without a lead, excerpts from the first passage too
    # Where the index scored every passage's windows (EmbeddingGemma), their scores carry the passages' rank
    # (excerpts.RANK_PRIOR) and no passage is sent whole.
    from knowledge_base.windows import window_spans

    def picked(lead: int) -> list[str]:
        return [body for _, body in ragchat.lead_and_excerpts(q, hits, 120, 260, lead, "zh", reader.store)]

    hits = reader.store.search(q, k=4)
    assert picked(200)[0] == hits[0].text and picked(200) != picked(0)
    for h in hits:
        h.windows = [(s, e, 0.5) for s, e in window_spans(h.text)]
    assert picked(200) == picked(0) and picked(0)[0] != hits[0].text


def test_an_over_long_card_is_cut_but_the_mode_rules_are_kept(zh_store) -> None:
    from characters import load_card

    card = load_card(zh_store)
    for mode in ragchat.MODES.names():
        rules = ragchat.MODES.create(mode).text(prompting.texts_for(card), "rules", card.name)
        text = ragchat.system_prompt(card, ragchat.MODES.create(mode), Budget(card=120))
        assert text.endswith(rules) and text.count(rules) == 1
        assert count_tokens(text) <= 120
        assert text.startswith(card.persona.strip()[:10])


def test_passages_already_sent_are_not_repeated(zh_store, tiny_llm) -> None:
    bot = Companion(zh_store, llm=tiny_llm(), k=2)
    bot_done = bot.ask("黛玉给鹦鹉取的名字叫什么？")
    bot_done = bot.ask("黛玉给鹦鹉取的名字叫什么？")
    first, second = bot.history
    assert first.sources
    first_ids = {s["chunk_id"] for s in first.sources}
    assert first_ids.isdisjoint(s["chunk_id"] for s in second.sources)
    for s in first.sources:
        assert s["passage"] not in second.prompt


def test_history_is_trimmed_oldest_first_when_over_budget(zh_store, tiny_llm) -> None:
    budget = Budget(passages=120, passage=60, history=300)
    rec = Recorder()
    bot = Companion(zh_store, llm=tiny_llm(rec, max_tokens=12), budget=budget, k=2)
    questions = ["黛玉给鹦鹉取的名字叫什么？", "宝玉穿的蓑衣是谁送的？", "菊花诗会谁起的社？", "黛玉夜里写了几首诗？"]
    for q in questions:
        bot_done = bot.ask(q)
    last = rec.calls[-1]
    replayed = last[1:-1]
    assert 0 < len(replayed) < 2 * (len(questions) - 1), "some, not all, earlier turns are kept"
    assert sum(count_tokens(str(m.content)) for m in replayed) <= budget.history
    # What is kept is the newest turns, verbatim and in order.
    full = []
    for turn in bot.history[:-1]:
        full += [turn.prompt, turn.answer]
    assert [m.content for m in replayed] == full[-len(replayed):]


def test_a_follow_up_gets_the_smaller_follow_up_passage_budget(zh_store, tiny_llm) -> None:
    budget = Budget(passages=600, followup_passages=120, passage=110)
    bot = Companion(zh_store, llm=tiny_llm(), budget=budget, k=4)
    bot_done = bot.ask("黛玉给鹦鹉取的名字叫什么？")
    assert len(bot_done.sources) >= 3 and bot_done.tokens["passages"] > 120
    bot_done = bot.ask("菊花诗会谁评的第一？")
    assert len(bot_done.sources) == 1 and bot_done.tokens["passages"] <= 120


def test_after_a_history_trim_the_next_turns_keep_an_unchanged_prefix(zh_store, tiny_llm) -> None:
    # Dropping the oldest turn every turn would change the prompt's head every turn, and
    # llama.cpp would re-read the whole history each time; dropping to half the budget at
    # once lets the following turns append to an unchanged prefix again.
    budget = Budget(passages=100, followup_passages=100, passage=100, examples=0, history=500)
    rec = Recorder()
    bot = Companion(zh_store, llm=tiny_llm(rec, max_tokens=8), budget=budget, k=1)
    questions = ["黛玉给鹦鹉取的名字叫什么？", "宝玉穿的蓑衣是谁送的？", "菊花诗会谁起的社？", "黛玉夜里写了几首诗？",
                 "雪团儿会念哪句诗？", "紫鹃把架子挂在哪里？", "李纨评谁第一？", "宝钗说了什么？"]
    for q in questions:
        bot_done = bot.ask(q)
    prefix_kept = [
        [m.content for m in after[: len(before)]] == [m.content for m in before]
        for before, after in zip(rec.calls, rec.calls[1:], strict=False)
    ]
    trims = prefix_kept.count(False)
    assert trims >= 1, "the history budget was exceeded at least once"
    # A sliding window breaks the prefix on every turn once full (False, False, ...).
    assert not any(not x and not y for x, y in zip(prefix_kept, prefix_kept[1:], strict=False)), prefix_kept
    for call in rec.calls:
        assert sum(count_tokens(str(m.content)) for m in call[1:-1]) <= budget.history


# -------------------------------------------------------------------------- modes
def test_reader_and_roleplay_prompts_differ(zh_store) -> None:
    reader = Companion(zh_store, mode="reader", llm=object())  # the model is not called
    roleplay = Companion(zh_store, mode="roleplay", llm=object())
    q = "你的鹦鹉叫什么？"
    r_msgs, r_prompt, _, _ = reader.build_messages(q)
    p_msgs, p_prompt, _, _ = roleplay.build_messages(q)
    assert r_msgs[0].content != p_msgs[0].content
    assert "出处" in r_msgs[0].content and "第一人称" in p_msgs[0].content
    assert "【问题】" in r_prompt and "【来访者说】" in p_prompt
    # Reader states the question before the passages too (the model reads them knowing what it looks
    # for), and reminds it that the question may be about someone else; role-play asks once, at the end.
    assert r_prompt.startswith("【问题】\n" + q) and r_prompt.count(q) == 2
    assert r_prompt.index("【书中段落】") < r_prompt.rindex(q) and "不要当成你自己" in r_prompt
    assert p_prompt.count(q) == 1 and p_prompt.index("【书中段落】") < p_prompt.index(q)
    roleplay.history.append(ragchat.Turn("x", "y", "z"))
    roleplay.set_mode("reader")  # switching restarts the conversation (its system prompt changed)
    assert roleplay.mode.name == "reader" and not roleplay.history


def test_roleplay_shows_the_cards_example_exchanges_and_reader_mode_does_not(zh_store) -> None:
    from characters import load_card

    card = load_card(zh_store)
    assert card.example_dialogue, "the bundled card ships example exchanges"
    first = card.example_dialogue[0]
    roleplay = Companion(zh_store, mode="roleplay", llm=object()).head()
    reader = Companion(zh_store, mode="reader", llm=object()).head()
    # Sent as the conversation's first turns: the visitor's words labelled as in a real turn, then her reply.
    assert [m.type for m in roleplay[:3]] == ["system", "human", "ai"]
    assert roleplay[1].content.endswith(first["user"]) and roleplay[2].content == first["reply"]
    assert len(reader) == 1 and first["reply"] not in reader[0].content
    # They fit inside the card budget with the persona, which keeps priority.
    mode, small = ragchat.MODES.create("roleplay"), Budget(card=300)
    system, turns = ragchat.system_prompt(card, mode, small), prompting.example_turns(card, mode, small)
    used = count_tokens(system) + sum(count_tokens(u) + count_tokens(r) + prompting.TURN_MARKS for u, r in turns)
    assert used <= 300 and system.startswith(card.persona.strip()[:10])
    assert len(turns) < len(prompting.example_turns(card, mode, Budget()))


def test_each_mode_sends_its_own_temperature_to_the_model(zh_store, tiny_llm) -> None:
    rec = Recorder()
    settings = load_settings(temperature=0.9, reader_temperature=0.05)
    for mode in ("reader", "roleplay"):
        Companion(zh_store, mode=mode, llm=tiny_llm(rec), settings=settings).ask("雪团儿是什么？")
    temps = [p.get("temperature") for p in rec.params]
    # The tiny model's role-play answer may trip the persona guard and be generated again: same temperature.
    assert temps[0] == 0.05 and temps[1:] and set(temps[1:]) == {0.9}


def test_roleplay_answers_continue_a_first_person_start_and_reader_answers_do_not(zh_store, tiny_llm) -> None:
    rec = Recorder()
    role = Companion(zh_store, mode="roleplay", llm=tiny_llm(rec))
    events = list(role.turn("你喜欢潇湘馆吗？"))
    pieces, role_done = [e.text for e in events if isinstance(e, TextDelta)], events[-1]
    assert pieces[0] == "我" and role.history[-1].answer.startswith("我")
    sent = rec.calls[-1]
    assert isinstance(sent[-1], AIMessage) and sent[-1].content == "我"  # continued, not answered anew
    assert isinstance(sent[-2], HumanMessage)
    # A started answer gets the short reminder without her name (naming her made the model speak of
    # her as someone else); without a start, the full reminder names her.
    name = role.card.name
    ask = sent[-2].content.rsplit("【来访者说】", 1)[1]
    assert ask.endswith("（用“我”，以你自己的身份直接回答。）") and name not in ask
    # The prefill is not the model's first token: the timing waits for the model.
    assert role_done.timings["first_token_ms"] > role_done.timings["retrieve_ms"]
    Companion(zh_store, mode="reader", llm=tiny_llm(rec)).ask("雪团儿是什么？")
    assert isinstance(rec.calls[-1][-1], HumanMessage)
    off = Companion(zh_store, mode="roleplay", llm=tiny_llm(rec), settings=load_settings(roleplay_prefill=False))
    off_done = off.ask("你喜欢潇湘馆吗？")
    assert isinstance(rec.calls[-1][-1], HumanMessage)
    assert f"以{name}的身份" in rec.calls[-1][-1].content


def test_english_prompt_uses_english_labels_and_joins_wrapped_lines(en_store, tiny_llm) -> None:
    bot = Companion(en_store, llm=tiny_llm())
    bot_done = bot.ask("What was the name of Elizabeth's kitten?")
    prompt = bot.history[-1].prompt
    assert prompt.startswith("[Question]\nWhat was the name") and "\n\n[Passages]\n\n[1] " in prompt
    assert prompt.rstrip().endswith("cite the chapter.)") and "not about yourself" in prompt
    kitten = [s for s in bot_done.sources if "Pemberley-Puss" in s["passage"]]
    assert kitten and kitten[0]["chapter"].startswith("Chapter 3") and "\n" not in kitten[0]["passage"]


# ------------------------------------------------------------------- no hits, errors
def test_no_hits_is_reported_and_the_prompt_says_no_passage_was_found(zh_store, tiny_llm) -> None:
    bot = Companion(zh_store, llm=tiny_llm())
    bot.retriever = FakeEmptyRetriever()  # what a store with no matching passage returns
    bot_done = bot.ask("黛玉的鹦鹉叫什么？")
    assert bot_done.answer
    assert bot_done.warning and bot_done.sources == []
    assert "（没有检索到相关段落）" in bot.history[-1].prompt


def test_missing_store_is_a_chat_error_naming_the_build_command(tiny_llm) -> None:
    bot = Companion("daiyu", llm=tiny_llm())  # a fresh home: her card exists, her store does not
    with pytest.raises(ChatError, match=r"gen_chroma\.py build daiyu"):
        bot_done = bot.ask("你好")


def test_unknown_character_is_a_chat_error() -> None:
    with pytest.raises(ChatError, match="gen_chroma.py build"):
        Companion("nobody-here")


def test_cli_error_is_one_sentence_without_traceback(capsys) -> None:
    code = ragchat.main(["../etc", "-q", "hi", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


# ---------------------------------------------------------------------------- CLI
def test_cli_json_output_schema(en_store, tiny_qwen_dir: Path, zhiyin_home: Path) -> None:  # noqa: F811
    env = dict(os.environ, ZHIYIN_HOME=str(zhiyin_home), ZHIYIN_LLM_BACKEND="transformers",
               ZHIYIN_LLM_MODEL=str(tiny_qwen_dir), ZHIYIN_MAX_TOKENS="6", ZHIYIN_THREADS="2")
    proc = subprocess.run(
        [sys.executable, str(REPO / "ragchat.py"), en_store, "-q", "Why did Elizabeth walk to Netherfield?",
         "-q", "What did Darcy say of her?", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, list) and len(out) == 2
    for row, q in zip(out, ["Why did Elizabeth walk to Netherfield?", "What did Darcy say of her?"], strict=True):
        assert {"question", "answer", "sources", "timings", "model"} <= set(row)
        assert row["question"] == q and isinstance(row["answer"], str) and row["answer"]
        assert set(row["timings"]) == {"retrieve_ms", "first_token_ms", "first_shown_ms", "total_ms", "end_ms"}
        assert all(isinstance(v, (int, float)) for v in row["timings"].values())
        assert row["model"] == f"transformers:{tiny_qwen_dir.name}"
        for s in row["sources"]:
            assert {"chapter", "source", "passage", "n"} <= set(s)
    assert out[0]["sources"] and out[0]["sources"][0]["chapter"].startswith("Chapter")


# ------------------------------------------------------------- the real default model
@pytest.mark.slow
def test_default_gguf_answers_a_reader_question_from_the_passage(zh_store) -> None:
    llm.prepare_default_model()  # the packaged default, assembled once into ZHIYIN_MODELS
    model = llm.get_chat_model(load_settings(temperature=0, max_tokens=80, threads=2))
    bot = Companion(zh_store, mode="reader", llm=model)
    bot_done = bot.ask("你给那只白鹦鹉取了什么名字？")
    answer = bot_done.answer
    # 雪团儿 is made up: only the passage in this store holds it.
    assert "雪团" in answer, answer
    assert any("雪团儿" in s["passage"] for s in bot_done.sources)


def test_a_cards_own_system_prompt_leaves_her_example_turns_less_room(zh_store) -> None:
    import dataclasses

    from characters import load_card

    card, mode, budget = load_card(zh_store), ragchat.MODES.create("roleplay"), Budget(card=700)
    long_rules = dataclasses.replace(card, system_prompt="{{original}}\n" + "请始终留在角色里，说话像她自己。" * 20)
    turns = prompting.example_turns(long_rules, mode, budget)
    assert len(turns) < len(prompting.example_turns(card, mode, budget))  # the card's prompt counts, as in the head
    system = ragchat.system_prompt(long_rules, mode, budget)
    assert count_tokens(system) + sum(count_tokens(u) + count_tokens(r) + prompting.TURN_MARKS for u, r in turns) <= 700
