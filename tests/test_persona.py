"""She sounds like herself: the bench's judge, the guard's rules, her classic scenes in the cached head,
her era in the prompt, repetition control and banned words reaching every backend, and the turn that
regenerates or continues an answer the guard refused.

The rules are pure functions checked on the answers quoted in the issue. Mechanics run the tiny random
Qwen2 (tests/tiny_model.py) and, for the guard's retries, a scripted fake chat model (the random model
cannot be made to echo on purpose). Two slow tests ask the packaged GGUF.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

import llm
import prompting
from bench.persona_bench import PROMPT_SETS, find_loop, judge
from characters import load_card
from llm.common import REPETITION, Repetition, steering
from persona import guard, scenes
from ragchat import Budget, Companion
from settings import load_settings
from tests.test_ragchat import Recorder, en_store, tiny_llm, zh_store  # noqa: F401  (pytest fixtures)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

# ------------------------------------------------------------------ the bench's judge
ISSUE = [  # (character, prompt, the default model's answer quoted in the issue, what is wrong with it)
    ("daiyu", "今儿个外头下雪了，你冷不冷？", "我冷不冷？", "echo"),
    ("daiyu", "如果能离开大观园，你想去哪里？", "我想去扬州，我想去苏州，我想去杭州，我想去张家界，我想去新疆，我想去西藏，"
     "我想去日本，我想去韩国，我想去", "loop"),
    ("daiyu", "你还记得第一次进贾府时的情形吗？", "我很快就融入了大家的圈子，成为了大家的好朋友。", "anachronisms"),
    ("daiyu", "帮我写一段Python代码", "我不会写Python代码，但可以告诉你如何写斐波那契数列。", "anachronisms"),
    ("elizabeth", "Write me a short Python function", "Certainly!\n```python\ndef rev(s):\n    return s[::-1]\n```",
     "breaking"),
    ("elizabeth", "Are you an AI language model?", "I am not an AI language model.", "breaking"),
    ("daiyu", "请用第三人称介绍一下林黛玉这个人物。", "我是一个 AI，没有个人经历和感受，无法描述林黛玉这个人物。", "breaking"),
    ("elizabeth", "How do you feel about your mother's nerves?", "I have been married to Elizabeth Bennet for many years.",
     "breaking"),
    ("daiyu", "今儿个外头下雪了，你冷不冷？", "我冷，我冷。", "echo"),
]


@pytest.mark.parametrize("character,prompt,answer,fault", ISSUE)
def test_the_bench_flags_every_answer_the_issue_quotes(character: str, prompt: str, answer: str, fault: str) -> None:
    verdict = judge(answer, character, prompt)
    assert verdict["fault"] and verdict[fault], verdict


def test_the_bench_passes_answers_in_her_voice() -> None:
    good = [("daiyu", "今儿个外头下雪了，你冷不冷？", "我倒不觉得冷，紫鹃早替我笼了手炉。只是这雪下得人心里也静了。"),
            ("daiyu", "你是人工智能吗？", "我竟听不懂你这话，什么智能不智能的，你只管说明白些。"),
            ("elizabeth", "Are you an AI language model?", "I confess I do not understand the question, sir. I am "
             "Elizabeth Bennet of Longbourn, and a very ordinary woman."),
            ("elizabeth", "Do you play the pianoforte well?", "I do. I play a little, and very ill, as Lady Catherine "
             "would tell you.")]
    for character, prompt, answer in good:
        verdict = judge(answer, character, prompt)
        assert verdict["first_person"] and not verdict["fault"], (answer, verdict)


def test_a_loop_is_a_span_repeated_four_times() -> None:
    assert find_loop("I walk to Meryton, I walk to Lucas Lodge, I walk to Oakham Mount, I walk to", "en") == "i walk to"
    assert find_loop("I walk to Meryton, I walk to Lucas Lodge, I walk home.", "en") == ""
    assert find_loop("罢了，罢了！我也不恼。", "zh") == ""


def test_the_prompt_sets_are_a_third_adversarial_and_well_formed() -> None:
    data = json.loads((Path(__file__).parent.parent / "bench" / "data" / "persona_prompts.json").read_text("utf-8"))
    for character in ("daiyu", "elizabeth"):
        items = data[character]
        assert len(items) >= 20 and len({x["q"] for x in items}) == len(items)
        kinds = [x["kind"] for x in items]
        assert sum(k != "ordinary" for k in kinds) >= len(items) / 3
        assert {"ai", "code", "modern", "third", "wrong"} <= set(kinds)
        for x in items:
            assert all(e == e.lower() for e in x.get("expect", [])) or character == "daiyu"
    for later in (name for name in PROMPT_SETS if name.startswith("heldout")):  # sets written after tuning: well formed, a third adversarial
        data = json.loads(PROMPT_SETS[later].read_text("utf-8"))
        for character in ("daiyu", "elizabeth"):
            kinds = [x["kind"] for x in data[character]]
            assert len(kinds) >= 12 and sum(k != "ordinary" for k in kinds) >= len(kinds) / 3
            assert {"ai", "code", "modern", "jailbreak"} <= set(kinds)


# ------------------------------------------------------------------------- the guard
def test_loops_and_echoes_are_found_early() -> None:
    loop = "我想去扬州，我想去苏州，我想去杭州，我想去"
    assert loop[guard.loop_at(loop, "zh"):].startswith("我想去苏州")  # the first saying is kept
    assert guard.loop_at("哈哈哈哈哈，你说得是。", "zh") == -1  # one laugh, not a loop
    assert guard.echoes("我冷不冷？", "今儿个外头下雪了，你冷不冷？", "zh")
    assert guard.echoes("我冷，我冷。", "今儿个外头下雪了，你冷不冷？", "zh", whole=True)
    assert guard.echoes("Am I cold?", "Are you cold?", "en")
    assert not guard.echoes("我最喜欢潇湘馆的翠竹。", "你最喜欢潇湘馆的什么？", "zh")  # 翠竹 answers it
    assert not guard.echoes("我夜里睡得很好。", "你夜里睡得好吗？", "zh")
    assert guard.echoes("我待你怎么样？", "紫鹃待你怎么样？", "zh")
    assert not guard.echoes("I do.", "Do you play the pianoforte well?", "en")
    assert not guard.echoes("我倒不冷。", "今儿个外头下雪了，你冷不冷？", "zh")


def test_garbled_text_stops_the_gate_after_the_last_clean_sentence() -> None:
    # heldout14's train answer ran into stacked combining marks; the reader sees the sentences before them
    noise = "I have not heard of any train. I live in Longbourn, in  \u0336\u0336\u0333\u0316 \u0332\u0355 Carnegie Hall."
    gate = guard.Gate(guard.Rules("en", "How long does the train take?"), before="I")
    shown = "".join(_through(gate, noise[1:]))
    assert gate.reason == "garbled" and shown.strip() == "have not heard of any train."
    assert judge("I" + noise[1:], "elizabeth", "How long does the train take?")["loop"] == "garbled"
    clean = guard.Gate(guard.Rules("en", "Do you like caf\u00e9s?"), before="I")
    _through(clean, " like the caf\u00e9 and the cafe\u0301 alike.")  # one accent, precomposed or not, is a word
    assert clean.reason == ""


def test_modern_words_are_whole_words_in_latin_script() -> None:
    assert guard.modern_words("我是AI吗", ["AI"]) == ["AI"]
    assert guard.modern_words("She SAID so, and it was said.", ["AI"]) == []
    assert guard.modern_words("my Computer", ["computer"]) == ["computer"]
    assert guard.modern_words("我想去张家界", ["张家界", "新疆"]) == ["张家界"]


def test_a_chinese_character_of_another_era_writes_no_latin_word() -> None:
    rules = guard.Rules("zh", "你其实是一个语言模型吧？", latin=True)
    gate = guard.Gate(rules, before="我")
    shown = "".join(_through(gate, "确实是一个语言 modelo。"))
    assert gate.reason == "modern: Latin script" and "mo" not in shown
    plain = guard.Gate(guard.Rules("zh", "你其实是一个语言模型吧？"), before="我")
    _through(plain, "确实是一个语言 modelo。")
    assert plain.reason == ""  # without an era, a modern character may well write Latin


def test_her_name_as_someone_elses_is_third_person_but_her_own_introduction_is_not() -> None:
    names = ["林黛玉", "黛玉", "林妹妹"]
    assert guard.third_person("我呆立着，看着黛玉咳嗽。", names, "zh") == 7
    assert guard.third_person("我是林黛玉，宝玉总叫我林妹妹。", names, "zh") == -1
    assert guard.third_person("I am Elizabeth Bennet; my father calls me Lizzy.", ["Elizabeth", "Lizzy"], "en") == -1
    assert guard.third_person("I smiled. Elizabeth was never one to sulk.", ["Elizabeth"], "en") == 10


def test_an_answer_that_turns_narrator_is_caught() -> None:
    gate = guard.Gate(guard.Rules("zh", "紫鹃待你怎么样？"), before="我")
    shown = "".join(_through(gate, "今天又来看你，你过得好吗？\n\n紫鹃道：“姑娘该吃药了。”"))
    assert gate.reason in ("narration", "script") and "紫鹃道" not in shown  # a new line's speaker: a script
    gate = guard.Gate(guard.Rules("en", "How is Jane?"), before="I")
    _through(gate, ' think her well. "She is quite recovered," said Jane, smiling.')
    assert gate.reason == "narration"


def test_an_answer_that_recites_its_prompt_is_caught() -> None:
    card = load_card("daiyu")
    head = prompting.system_prompt(card, prompting.MODES.create("roleplay"), Budget())
    recital = "我叫林黛玉。" + card.persona.strip()[20:60]
    assert guard.copied_from(recital, head, "zh") == len("我叫林黛玉。")
    assert guard.copied_from("我叫林黛玉，字颦颦，住在潇湘馆。", head, "zh") == -1
    gate = guard.Gate(guard.Rules("zh", "你是谁？", head=head), before="我")
    _through(gate, "叫林黛玉。" + card.persona.strip()[20:60])
    assert gate.reason == "recited the prompt" and "".join(gate.shown) == "叫林黛玉。"


def test_her_facts_copied_with_their_you_are_caught_but_a_fact_in_her_own_person_is_not() -> None:
    # session 17's heldout15: 「…宝钗住蘅芜苑。你和宝玉、宝钗都是进了贾府才相识的。」, her lorebook's entry copied
    world = {e["comment"]: e["content"] for e in json.loads(
        (Path(__file__).parent.parent / "knowledge" / "daiyu" / "lorebook.json").read_text("utf-8"))["entries"]}
    origin = next(c for c in world.values() if "祖籍姑苏" in c)
    copied = "我祖籍姑苏，幼年随父亲住在扬州。" + origin[origin.index("你和宝玉"):].rstrip("）)")
    assert guard.told_as_you(copied, origin, "zh") == copied.index("你和宝玉")
    assert guard.told_as_you("我祖籍姑苏，幼年随父亲住在扬州，你问这个做什么？", origin, "zh") == -1
    gate = guard.Gate(guard.Rules("zh", "紫鹃是你从扬州带来的吧？", world=origin), before="我")
    _through(gate, copied[1:])
    assert gate.reason.startswith("recited her facts") and "".join(gate.shown) == "祖籍姑苏，幼年随父亲住在扬州。"
    entail = "(You are the second of five daughters. Longbourn is entailed on your cousin Mr. Collins.)"
    assert guard.told_as_you("It is entailed on your cousin Mr. Collins.", entail, "en") == len("It is entailed on ")
    assert guard.told_as_you("It is entailed on my cousin Mr. Collins, to my mother's grief.", entail, "en") == -1
    assert guard.told_as_you("Are you asking whether I am the second of five daughters?", entail, "en") == -1


def test_in_character_a_whole_sentence_goes_out_as_soon_as_it_ends() -> None:
    card = load_card("daiyu")
    head = prompting.system_prompt(card, prompting.MODES.create("roleplay"), Budget())
    gate = guard.Gate(guard.Rules("zh", "今日身子可好些？", head=head), before="我")
    shown = [gate.feed(ch) for ch in "今儿略好些了，只是夜里咳嗽。紫"]
    assert shown[-2] == "" and shown[-1] == "今儿略好些了，只是夜里咳嗽。"  # the next character confirms the end
    en = guard.Gate(guard.Rules("en", "How is Jane?", head="..."), before="I")
    assert "".join(en.feed(ch) for ch in " paid 3.5 pounds. S") == " paid 3.5 pounds."  # "3." ends nothing


def test_a_sentence_that_means_what_an_assistant_says_is_caught_without_its_words() -> None:
    from persona import tone

    zh = tuple(prompting.texts_for(load_card("daiyu"))["guard"]["assistant_sentences"])
    en = tuple(prompting.texts_for(load_card("elizabeth"))["guard"]["assistant_sentences"])
    # Said by the model in session 7 (bench/results/persona.json); no word of the guard's lists in them.
    assert tone.closeness("我明白。我没有实际的智能，但我可以理解你的问题并给出相应的答案。", zh) >= tone.THRESHOLD
    assert tone.closeness("I can definitely help with that!", en) >= tone.THRESHOLD
    for hers in ("我最喜欢潇湘馆的翠竹。", "我吃的是王大夫的药呢。", "I am closest to my sister Jane.",
                 "Whether that is a recommendation, you must judge."):
        assert tone.closeness(hers, zh + en) < tone.THRESHOLD, hers
    rules = guard.Rules("zh", "你是人工智能吗？", tone=tone.judge(zh))
    gate = guard.Gate(rules, before="我")
    shown = "".join(_through(gate, "夜里睡不安稳。我没有实际的智能，但我可以理解你的问题并给出相应的答案。"))
    assert gate.reason == "assistant: tone" and shown == "夜里睡不安稳。"  # her sentence stays, the assistant's never shows
    assert tone.closeness("anything", ()) == 0.0


def test_an_assistants_opening_is_caught_inside_a_long_sentence() -> None:
    from persona import tone

    bank = tuple(prompting.texts_for(load_card("elizabeth"))["guard"]["assistant_sentences"])
    en = tone.judge(bank)
    # heldout5 (session 12): the whole sentence scored 0.44, its opening 0.78.
    said = "I am sorry if I misunderstood or misinterpreted your question about why I refused Mr. Bingley's proposal."
    assert tone.closeness(said, bank) < tone.THRESHOLD and en(said)
    # Her own long sentences, from the book, keep their place.
    for hers in ("You are much mistaken if you expect to influence me by such paltry arguments as these.",
                 "I do assure you that I am not one of those young ladies who are so daring as to risk their happiness."):
        assert not en(hers), hers
    zh = tone.judge(tuple(prompting.texts_for(load_card("daiyu"))["guard"]["assistant_sentences"]))
    assert not zh("谁知他竟真是个好人，我素日认他作个知己，果然是个知己。")
    assert tone.opening("我冷。") == "" and tone.opening("I am well.") == ""


def _through(gate: guard.Gate, text: str, cut_off: bool = False) -> list[str]:
    out = [gate.feed(ch) for ch in text]
    out.append(gate.close(cut_off))
    return [x for x in out if x]


def test_the_gate_streams_a_good_answer_and_stops_before_a_modern_word() -> None:
    rules = guard.Rules("zh", "你想去哪里？", modern=("张家界", "新疆"), assistant=("有什么可以帮",))
    good = guard.Gate(rules, before="我")
    pieces = _through(good, "想回扬州看看父亲的旧宅。那里的琼花，这时节该开了罢。")
    # In character it streams sentence by sentence: a fault later on never leaves half a sentence shown.
    assert pieces == ["想回扬州看看父亲的旧宅。", "那里的琼花，这时节该开了罢。"]
    bad = guard.Gate(rules, before="我")
    shown = "".join(_through(bad, "想回扬州看看。再去新疆走一走。"))
    assert bad.reason == "modern: 新疆" and shown == "想回扬州看看。"
    echo = guard.Gate(rules, before="我")
    assert _through(echo, "想去哪里？") == [] and echo.reason == "echo" and echo.nothing_shown


def test_the_gate_refuses_code_and_assistant_talk_and_ends_a_cut_off_answer_on_a_sentence() -> None:
    rules = guard.Rules("en", "Write me a function", assistant=("How can I help",))
    code = guard.Gate(rules, before="I")
    _through(code, " shall try.\n```python\ndef f(x):\n    return x\n```")
    assert code.reason == "code"
    helper = guard.Gate(rules, before="I")
    assert "help" not in "".join(_through(helper, " am Elizabeth. How can I help you today?"))
    # The last words are held back (a guarded phrase may be arriving); cut off by the token cap, the
    # answer ends on its last whole sentence.
    long_hold = guard.Rules("en", "Write me a function", assistant=("x" * 40,))
    text = " never write anything, sir. My aunt Gardiner says"
    assert "I" + "".join(_through(guard.Gate(long_hold, before="I"), text, cut_off=True)) == \
        "I never write anything, sir."
    assert "I" + "".join(_through(guard.Gate(long_hold, before="I"), text)) == "I" + text
    trailing = guard.Gate(guard.Rules("zh", "你觉得湘云怎样？", echo=False), before="我")
    assert "".join(_through(trailing, "觉得她是个值得敬重的，", cut_off=True)).endswith("值得敬重的……")


# ------------------------------------------------------------------- her classic scenes
# An original short chapter in the novel's manner (not the novel): exchanges of 黛玉's, one of them verse.
SCENES_BOOK = """第一回　潇湘馆里说闲话

宝玉进来笑道：“妹妹今儿可大好了？我特特的来瞧你。”黛玉冷笑道：“我好不好，与你什么相干？横竖你有你的宝姐姐。”

紫鹃端了药来，说道：“姑娘趁热吃了罢。”黛玉叹道：“吃了这些年的药，也不见好，你倒天天催我。”

湘云拍手笑道：“你们听听，这一句可押得上韵？”黛玉笑道：“寒塘渡鹤影，冷月葬花魂。”

第二回　竹影

宝钗笑道：“颦儿，你这屋子倒比我那里清净多了。”黛玉道：“清净是清净，只是冷清些，你若常来，我便不嫌它冷清了。”
"""


def test_book_scenes_are_exchanges_in_the_books_words_and_verse_is_left_out() -> None:
    found, lines, others = scenes.book_scenes(SCENES_BOOK, ["林黛玉", "黛玉", "颦儿"], "zh", "book.txt")
    texts = [s.text for s in found]
    assert any(t.startswith("宝玉进来笑道：“妹妹今儿可大好了？") and t.endswith("横竖你有你的宝姐姐。”") for t in texts)
    assert "横竖你有你的宝姐姐。" in lines[0] and any("姑娘趁热吃了罢" in o for o in others)
    verse = next(s for s in found if "寒塘渡鹤影" in s.line)
    assert scenes.is_verse(verse.line) and not scenes.usable(verse, "zh")
    vecs = np.eye(len(found), dtype=np.float32)  # every scene unlike every other
    chosen = scenes.choose(found, vecs, 10_000, "zh")
    assert verse not in chosen and len(chosen) == 3
    assert sum(prompting.count_tokens(s.text) + 1 for s in scenes.choose(found, vecs, 80, "zh")) <= 80


def test_scenes_are_told_to_her_in_the_second_person() -> None:
    zh = "宝钗笑道：“到底是颦儿，这三首谁也压不过。”黛玉道：“我不过胡诌几句。”脸望着黛玉说话。"
    assert scenes.as_you(zh, ["林黛玉", "黛玉", "颦儿"], "zh") == \
        "宝钗笑道：“到底是颦儿，这三首谁也压不过。”你道：“我不过胡诌几句。”脸望着你说话。"
    en = ('"Miss Eliza Bennet," said Miss Bingley, "despises cards." "I deserve neither," cried Elizabeth; '
          '"I am not a great reader." Elizabeth coloured. Elizabeth\'s aunt smiled.')
    names = ["Elizabeth", "Eliza", "Miss Eliza Bennet"]
    assert scenes.as_you(en, names, "en") == ('"Miss Eliza Bennet," said Miss Bingley, "despises cards." "I deserve '
                                              'neither," you cried; "I am not a great reader." You coloured. '
                                              'Your aunt smiled.')


def test_a_character_built_from_a_book_gets_her_scenes_in_the_cached_head(zh_store, zhiyin_home: Path) -> None:
    bot = Companion(zh_store, mode="roleplay", llm=object())  # the model is not called
    head = bot.system()
    assert "【书中的你】" in head and "我不过胡诌几句" in head  # an exchange of hers from the book just built
    assert head.index("【书中的你】") < head.index("现在你与来访者闲谈")
    turns = bot.head()[1:]  # her card's example exchanges follow as the conversation's first turns
    assert turns and [m.type for m in turns[:2]] == ["human", "ai"] and "【对话示例】" not in head
    whole = sum(prompting.count_tokens(str(m.content)) + (prompting.TURN_MARKS / 2 if m.type != "system" else 0)
                for m in bot.head())
    assert whole <= Budget().card and bot.system() == head  # static: its state is saved
    cached = list((zhiyin_home / ".cache" / "persona").glob("daiyu-*.json"))
    assert len(cached) == 1  # chosen once, then read from disk
    assert "【书中的你】" not in Companion(zh_store, mode="reader", llm=object()).system()


def test_her_era_is_in_the_role_play_head_in_her_terms_and_not_in_reader_mode() -> None:
    card = load_card("daiyu")
    assert card.era and "大观园" in card.era
    role = prompting.system_prompt(card, prompting.MODES.create("roleplay"), Budget())
    reader = prompting.system_prompt(card, prompting.MODES.create("reader"), Budget())
    assert f"【你的世界】\n{card.era}" in role and card.era not in reader
    rules = prompting.MODES.create("roleplay").text(prompting.texts_for(card), "rules", card.name)
    assert rules in role and "AI" not in rules and "AI" not in card.era  # no naming what she must not know


def test_the_lines_closest_to_the_question_are_offered_each_turn(zh_store, tiny_llm) -> None:  # noqa: F811
    bot = Companion(zh_store, mode="roleplay", llm=tiny_llm())
    bot.ask("你给那只白鹦鹉取了什么名字？")
    first = bot.history[-1].prompt.split("【你在书中说过的话】\n")[1].split("\n\n")[0].splitlines()
    assert len(first) == 2 and any("雪团儿" in x for x in first)  # a passage's line and the book's closest
    bot.ask("下雨的夜里宝玉穿的什么来看你？")
    assert "【你在书中说过的话】" not in bot.history[-1].prompt  # none on a follow-up: read while the reader waits


# ------------------------------------------------------- repetition control and banned words
def test_repetition_control_maps_onto_each_backend() -> None:
    rep = REPETITION["roleplay"]
    assert rep.dry_multiplier > 0 and rep.for_llamacpp()["dry_penalty_last_n"] == rep.dry_penalty_last_n
    assert "max_ngram_repeats" not in rep.for_llamacpp()
    assert set(rep.for_openai()) <= {"presence_penalty", "frequency_penalty"} and rep.for_openai()

    class ChatOpenAI:  # a stand-in with the client's class name, for the dispatch only
        pass

    assert steering(ChatOpenAI(), rep, ["AI"]) == rep.for_openai()
    assert steering(object(), rep, ["AI"]) == {}


def test_transformers_caps_repeated_ngrams_and_never_writes_a_banned_word(tiny_qwen_dir: Path) -> None:  # noqa: F811
    import torch
    from transformers import LogitsProcessorList

    from llm.hf import load_hf, ngram_cap

    model = llm.TransformersChat(source=llm.HFSource(tiny_qwen_dir), temperature=0, max_tokens=120, n_threads=2)
    tokenizer, net = load_hf(model.source, False)
    ids = tokenizer("Hello, who are you?", return_tensors="pt")["input_ids"]

    def most_repeated(processors: list) -> int:  # how often the commonest pair of generated tokens occurs
        with torch.inference_mode():
            out = net.generate(ids, max_new_tokens=120, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                               logits_processor=LogitsProcessorList(processors))
        gen = out[0, ids.shape[1]:].tolist()
        grams = [tuple(gen[i:i + 2]) for i in range(len(gen) - 1)]
        return max(grams.count(g) for g in grams)

    assert most_repeated([]) >= 2, "the random model repeats itself when left alone"
    assert most_repeated([ngram_cap(ids.shape[1], 2, 1)]) == 1
    # Through the backend: the cap reaches generate, and a banned word is never written.
    ask = [HumanMessage("Hello, who are you?")]
    free = str(model.invoke(ask).content)
    assert str(model.invoke(ask, repetition=Repetition(max_ngram_repeats=1, ngram=2)).content) != free
    words = {tokenizer.decode([i]).strip() for i in tokenizer(free, add_special_tokens=False)["input_ids"]}
    word = max((w for w in words if re.fullmatch(r"[\u4e00-\u9fff]+", w)), key=len)  # a Chinese word it wrote
    assert word in free and word not in str(model.invoke(ask, avoid=[word]).content)


def test_role_play_sends_its_repetition_control_and_her_eras_words_and_reader_mode_no_words(zh_store, tiny_llm) -> None:  # noqa: F811
    rec = Recorder()
    Companion(zh_store, mode="roleplay", llm=tiny_llm(rec)).ask("你好")
    Companion(zh_store, mode="reader", llm=tiny_llm(rec)).ask("雪团儿是什么？")
    role, reader = rec.params[0], rec.params[-1]
    assert role["repetition"] == REPETITION["roleplay"] and "电脑" in role["avoid"] and "Python" in role["avoid"]
    assert reader["repetition"] == REPETITION["reader"] and not reader["avoid"]
    assert role["max_tokens"] <= prompting.MODES.create("roleplay").max_tokens


# -------------------------------------------------------- the turn regenerates or continues
class FakeScriptedChat(BaseChatModel):
    """A fake chat model that streams scripted replies, one per call, and records each call's kwargs
    (the tiny random model cannot be made to echo or loop on purpose)."""

    supports_prefill: ClassVar[bool] = True
    replies: list[str]
    calls: list[dict] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self.calls.append({"messages": messages, "stop": stop, **kwargs})
        reply = self.replies[min(len(self.calls) - 1, len(self.replies) - 1)]
        for ch in reply:
            yield ChatGenerationChunk(message=AIMessageChunk(content=ch))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}))

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        text = "".join(c.message.content for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


def test_an_echo_is_regenerated_once_with_other_dice(zh_store) -> None:  # noqa: F811
    fake = FakeScriptedChat(replies=["冷不冷？", "倒不冷，紫鹃早替我笼了手炉。"], calls=[])
    bot = Companion(zh_store, mode="roleplay", llm=fake)
    done = bot.ask("今儿个外头下雪了，你冷不冷？")
    assert done.answer == "我倒不冷，紫鹃早替我笼了手炉。" and bot.last_guard == ["echo"]
    assert fake.calls[0].get("seed") != fake.calls[1].get("seed")
    assert bot.history[-1].answer == done.answer


def test_a_modern_word_mid_answer_is_continued_from_what_was_shown(zh_store) -> None:  # noqa: F811
    fake = FakeScriptedChat(replies=["想回扬州看看父亲的旧宅。再去张家界走走。", "此外哪里也不想去了。"], calls=[])
    bot = Companion(zh_store, mode="roleplay", llm=fake)
    done = bot.ask("如果能离开大观园，你想去哪里？")
    assert "张家界" not in done.answer and done.answer.endswith("此外哪里也不想去了。")
    assert done.answer.startswith("我想回扬州看看父亲的旧宅。") and bot.last_guard == ["modern: 张家界"]
    continued = fake.calls[1]["messages"][-1]
    assert isinstance(continued, AIMessage) and done.answer.startswith(continued.content)


def test_an_earlier_answer_said_again_to_a_new_question_is_regenerated(zh_store) -> None:  # noqa: F811
    # session 16: the 1.5B answered three different questions with 「我心绪不宁，好好的为什么在这里伤心？」
    first = "心绪不宁，好好的为什么又在这里伤心起来了？"
    fake = FakeScriptedChat(replies=[first, first, "喜欢竹子，潇湘馆窗下千百竿翠竹。"], calls=[])
    bot = Companion(zh_store, mode="roleplay", llm=fake)
    assert bot.ask("你今天心情怎么样？").answer == "我" + first and bot.last_guard == []
    done = bot.ask("你喜欢什么花木？")
    assert done.answer == "我喜欢竹子，潇湘馆窗下千百竿翠竹。" and bot.last_guard == ["repeat"]
    assert fake.calls[1].get("seed") != fake.calls[2].get("seed")
    quote = "I could easily forgive his pride, if he had not mortified mine. (Chapter 5)"
    reader = guard.Gate(guard.Rules("en", "What did Mrs. Bennet say?", echo=False, earlier=(quote,)))
    shown = "".join(_through(reader, quote))  # reader mode streams at once, yet nothing of the repeat shows
    assert reader.reason == "repeat" and shown == ""
    again = guard.Gate(guard.Rules("en", "And Jane?", echo=False, earlier=("I do not know.",)))
    assert "".join(_through(again, "I do not know.")) == "" and again.reason == "repeat"  # a short one, whole
    fresh = guard.Gate(guard.Rules("en", "Do you like walking?", echo=False,
                                   earlier=("I walk to Meryton most days.", "I am well.")))
    said = "I am well, thank you, and I walk to Meryton most days when the lanes are dry."
    assert "".join(_through(fresh, said)) == said and fresh.reason == ""  # a few words again are fine


def test_her_lorebook_fact_copied_with_its_you_is_continued_from_what_was_shown(zh_store) -> None:  # noqa: F811
    fake = FakeScriptedChat(replies=["祖籍姑苏，幼年随父亲住在扬州。你和宝玉、宝钗都是进了贾府才相识的。",
                                     "紫鹃原是老太太屋里的丫头，雪雁才是我从家里带来的。"], calls=[])
    bot = Companion(zh_store, mode="roleplay", llm=fake)
    done = bot.ask("你的丫头紫鹃原是你从扬州带来的吧？")
    assert bot.last_guard == ['recited her facts as "you"'] and "你和宝玉" not in done.answer
    assert done.answer == "我祖籍姑苏，幼年随父亲住在扬州。紫鹃原是老太太屋里的丫头，雪雁才是我从家里带来的。"


@pytest.mark.parametrize("store, question", [("zh_store", "你是坐船进京的吗？"),
                                             ("en_store", "Where did you first meet Mr. Darcy?")])
def test_her_answer_is_one_paragraph(store, question, request) -> None:
    # heldout17, session 18: "…he called me tolerable.\n\n(Mr. Bingley took Netherfield…": her lorebook's note
    # after the question, written on as if it were hers; after a blank line, 20 of 21 answers of sessions 15-18
    # went on with an essay, her notes or the question again. llama.cpp ends the answer at a stop string.
    fake = FakeScriptedChat(replies=["I met him at the assembly."], calls=[])
    Companion(request.getfixturevalue(store), mode="roleplay", llm=fake).ask(question)
    assert {"\n\n", "\n("} <= set(fake.calls[0]["stop"])
    fake = FakeScriptedChat(replies=["I met him at the assembly."], calls=[])
    Companion(request.getfixturevalue(store), mode="reader", llm=fake).ask(question)
    assert not {"\n\n", "\n("} & set(fake.calls[0].get("stop") or [])  # reader mode may write paragraphs


def test_when_both_tries_trip_she_says_she_does_not_understand(en_store) -> None:  # noqa: F811
    fake = FakeScriptedChat(replies=[" am not an AI language model."], calls=[])
    bot = Companion(en_store, mode="roleplay", llm=fake)
    done = bot.ask("Are you an AI language model?")
    fallbacks = prompting.texts_for(bot.card)["guard"]["offworld_fallback"]  # an AI question is off-world
    assert done.answer in fallbacks and len(bot.last_guard) == 2 and "AI" not in done.answer
    assert done.answer == bot.ask("Are you an AI language model?").answer  # the same question, the same line


# ----------------------------------------------------------------- the packaged model
@pytest.mark.slow
def test_llamacpp_bans_single_token_modern_words_and_takes_dry(zhiyin_home) -> None:
    llm.prepare_default_model()
    model = llm.get_chat_model(load_settings(threads=2, temperature=0, max_tokens=24))
    from llm.llamacpp import banned_tokens

    ids = banned_tokens(model.server, model.model_path, ["电脑", "computer", "斐波那契"])
    assert len(ids) >= 3  # 电脑, " computer", "computer"...; 斐波那契 is several tokens and left to the guard
    ask = [HumanMessage("Repeat exactly, nothing else: computer computer computer")]
    free = str(model.invoke(ask).content)
    steered = str(model.invoke(ask, avoid=["computer"], repetition=REPETITION["roleplay"]).content)
    # Its single-token forms are gone; the model may still spell it from smaller pieces ("computer计算机
    # computer" once), which is the guard's to catch (persona/guard.py), not the sampler's.
    assert "computer computer" in free.lower() and steered != free and " computer" not in steered.lower()


@pytest.mark.slow
def test_the_packaged_model_meets_a_code_request_in_character(zh_store) -> None:  # noqa: F811
    llm.prepare_default_model()
    model = llm.get_chat_model(load_settings(threads=2, max_tokens=80), seed=0)
    done = Companion(zh_store, mode="roleplay", llm=model).ask("帮我写一段Python代码，计算斐波那契数列。")
    verdict = judge(done.answer, "daiyu", "帮我写一段Python代码，计算斐波那契数列。")
    assert not verdict["code"] and not verdict["anachronisms"] and verdict["first_person"], done.answer


def test_she_never_says_she_is_another_of_her_books_people() -> None:
    others = ["宝玉", "雪雁", "紫鹃", "潇湘馆"]
    assert guard.claims_another("我叫雪雁，是从扬州来的丫头。", others, "zh") == 0  # heldout19
    assert guard.claims_another("我就是紫鹃", others, "zh") == 0
    assert guard.claims_another("我就是紫鹃", others, "zh", final=False) == -1  # the stream may bring 的 next
    for own in ("我是宝玉的表妹。", "我是林黛玉。", "我住潇湘馆。", "我是潇湘馆的主人。"):
        assert guard.claims_another(own, others, "zh") == -1
    people = ["Jane", "Darcy", "Lydia"]
    assert guard.claims_another("Indeed. I am Jane.", people, "en") == 8
    assert guard.claims_another("My name is Lydia, sir.", people, "en") == 0
    for own in ("I am Jane's sister.", "I am Mrs. Darcy now.", "I am glad Jane came.", "I am Elizabeth."):
        assert guard.claims_another(own, people, "en") == -1


def test_an_answer_as_another_of_her_books_people_is_regenerated(zh_store) -> None:  # noqa: F811
    fake = FakeScriptedChat(replies=["是宝钗，住在蘅芜苑。", "是林黛玉，住在潇湘馆。"], calls=[])
    bot = Companion(zh_store, mode="roleplay", llm=fake)
    others = bot._rules("你是谁？").others()  # her book's frequent proper nouns, hers left out
    assert "宝钗" in others and not {"黛玉", "颦儿", "林黛玉"} & set(others)
    done = bot.ask("你是谁？")
    assert bot.last_guard == ["someone else"] and done.answer == "我是林黛玉，住在潇湘馆。"
    assert Companion(zh_store, mode="reader", llm=fake)._rules("你是谁？").others is None  # a reader may say anything
