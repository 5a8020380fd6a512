"""Lorebooks (cards/lorebook.py, cards/worldinfo.py): which entries fire, in what order, within what
budget, and where they land in the prompt, so that llama.cpp's prefix cache holds; a card's system prompt
and post-history instructions in the prompt (prompting.py, ragchat.py).

Activation is checked on books written here; the prompt on a V3 card imported for real, with a short book
built with the packaged USE embedder and the tiny random Qwen2 (tests/tiny_model.py) answering.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler

import llm
from cards import lorebook, spec, worldinfo
from cards.transfer import import_card
from characters import load_lorebook
from settings import load_settings
from tests.card_samples import b64, lore_entry, png_card, v3_card
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)


# ---------------------------------------------------------------------------------- activation
def fired(book: dict, recent: list[str], budget: int | None = None, **scan) -> list[str]:
    """The contents that fire, in prompt order (token count: one per character, to make budgets exact)."""
    return [f.text for f in lorebook.activate(book, recent, budget, len, lorebook.Scan(**scan))]


def book(*entries: dict, **kw) -> dict:
    return {"entries": list(entries), "extensions": {}, **kw}


def test_keys_match_case_insensitively_unless_case_sensitive() -> None:
    b = book(lore_entry(keys=["Kestrel"], content="A"), lore_entry(keys=["Kestrel"], content="B", case_sensitive=True))
    assert fired(b, ["the KESTREL flies"]) == ["A"]
    assert fired(b, ["the Kestrel flies"]) == ["A", "B"]


def test_constant_disabled_and_empty_entries() -> None:
    b = book(lore_entry(constant=True, content="always"), lore_entry(keys=["x"], content="off", enabled=False),
             lore_entry(keys=["x"], content=""))
    assert fired(b, ["x"]) == ["always"]


def test_selective_entries_need_a_secondary_key_too() -> None:
    b = book(lore_entry(keys=["map"], secondary_keys=["north", "south"], selective=True, content="S"),
             lore_entry(keys=["map"], secondary_keys=["north"], selective=False, content="N"),
             lore_entry(keys=["map"], secondary_keys=["north"], selective=True, content="NOT ANY",
                        extensions={"selectiveLogic": 2}))
    assert fired(b, ["a map"]) == ["N", "NOT ANY"]
    assert fired(b, ["a map of the North"]) == ["S", "N"]


def test_only_the_last_scan_depth_messages_are_scanned() -> None:
    b = book(lore_entry(keys=["storm"], content="S"), scan_depth=2)
    assert fired(b, ["storm?", "no", "yes"]) == []
    assert fired(b, ["storm?", "no"]) == ["S"]
    assert fired(book(lore_entry(keys=["storm"], content="S"), scan_depth=0), ["storm"]) == []
    deep = book(lore_entry(keys=["storm"], content="@@scan_depth 3\nS"), scan_depth=1)
    assert fired(deep, ["storm?", "no", "yes"]) == ["S"]  # @@scan_depth overrides the book's


def test_order_is_insertion_order_and_the_budget_cuts_the_lowest_priority() -> None:
    b = book(lore_entry(keys=["a"], content="AAAA", insertion_order=3, priority=1),
             lore_entry(keys=["a"], content="BBBB", insertion_order=1, priority=5),
             lore_entry(keys=["a"], content="CCCC", insertion_order=2, priority=3))
    assert fired(b, ["a"]) == ["BBBB", "CCCC", "AAAA"]
    assert fired(b, ["a"], budget=8) == ["BBBB", "CCCC"]
    assert fired({**b, "token_budget": 4}, ["a"], budget=100) == ["BBBB"]  # the smaller budget wins
    # Without priority, the lowest insertion_order goes first (V3).
    nop = book(lore_entry(keys=["a"], content="LOW", insertion_order=1), lore_entry(keys=["a"], content="HIGH",
                                                                                   insertion_order=9))
    assert fired(nop, ["a"], budget=4) == ["HIGH"]


def test_regex_keys_and_invalid_patterns() -> None:
    b = book(lore_entry(keys=["/st(a|o)rs?/"], use_regex=True, content="R"),
             lore_entry(keys=["(unclosed"], use_regex=True, content="BAD"),
             lore_entry(keys=["^Hello$"], use_regex=True, case_sensitive=True, content="CS"),
             lore_entry(keys=["x"], use_regex=True, constant=True, content="C"))  # constant ignored with regex
    assert fired(b, ["Look at the STARS", "(unclosed"]) == ["R"]
    assert fired(b, ["hello"]) == [] and fired(b, ["Hello"]) == ["CS"]


def test_sillytavern_exports_are_read_as_sillytavern_means_them() -> None:
    # SillyTavern stamps use_regex: true on every entry it exports; its keys are text unless /written/.
    st = {"selectiveLogic": 0, "probability": 100, "useProbability": True, "match_whole_words": False}
    b = book(lore_entry(keys=["C++"], content="TEXT", use_regex=True, extensions=st),
             lore_entry(keys=[], constant=True, content="CONST", use_regex=True, extensions=st),
             lore_entry(keys=["/dra(g|k)on/i"], content="RE", use_regex=True, extensions=st),
             lore_entry(keys=["map"], secondary_keys=["north"], selective=True, content="SEL", use_regex=True,
                        extensions=st),
             lore_entry(keys=["cat"], content="WORD", extensions={**st, "match_whole_words": True}),
             lore_entry(keys=["far"], content="@@x\nDEEP", extensions={**st, "scan_depth": 3}))
    assert fired(b, ["far", "I code C++ near a DRAKON with a map", "no"]) == ["TEXT", "CONST", "RE", "DEEP"]
    assert fired(b, ["a category", "a map of the north", "cat!"]) == ["CONST", "SEL", "WORD"]


def test_macros_in_keys_and_content_are_resolved() -> None:
    b = book(lore_entry(keys=["{{char}}'s ship"], content="{{char}} owns it; {{user}} does not."))
    assert fired(b, ["Is this Mira's ship?"], char="Mira", user="Visitor") == ["Mira owns it; Visitor does not."]


def test_decorators_activate_only_after_every_and_switches() -> None:
    b = book(lore_entry(keys=["gold"], content="@@activate_only_after 2\nAFTER"),
             lore_entry(keys=["gold"], content="@@activate_only_every 2\nEVERY"),
             lore_entry(keys=["zzz"], content="@@activate\nALWAYS"),
             lore_entry(constant=True, content="@@dont_activate\nNEVER"),
             lore_entry(keys=["gold"], content="@@exclude_keys silver, copper\nEXCL"),
             lore_entry(keys=["gold"], content="@@additional_keys coin\nADD"),
             lore_entry(keys=["gold"], content="@@is_greeting 1\nGREET1"))
    assert fired(b, ["gold"], char_messages=1) == ["ALWAYS", "EXCL"]
    assert fired(b, ["gold coin and silver"], char_messages=2, greeting=1) == ["AFTER", "EVERY", "ALWAYS", "ADD",
                                                                               "GREET1"]


def test_decorators_are_trimmed_and_fallbacks_used_when_unknown() -> None:
    decorators, text = lorebook.parse_decorators("@@risu_only 3\n@@@activate_only_after 4\n@@depth 0\n\nBody\n")
    assert decorators == {"activate_only_after": ["4"], "depth": ["0"]} and text == "Body"
    decorators, _ = lorebook.parse_decorators("@@activate_only_after 1\n@@@activate_only_after 9\nx")
    assert decorators == {"activate_only_after": ["1"]}  # a known decorator: its fallback is not used


def test_match_history_decorators() -> None:
    b = book(lore_entry(keys=["x"], content="@@keep_activate_after_match\nKEEP"),
             lore_entry(keys=["x"], content="@@dont_activate_after_match\nONCE"))
    assert fired(b, ["x"]) == ["KEEP", "ONCE"]
    assert fired(b, ["nothing"], fired_before={0, 1}) == ["KEEP"]


def test_recursive_scanning_only_when_the_book_asks() -> None:
    entries = [lore_entry(keys=["ship"], content="The ship carries a compass."),
               lore_entry(keys=["compass"], content="The compass points home.")]
    assert fired(book(*entries), ["the ship"]) == ["The ship carries a compass."]
    assert len(fired(book(*entries, recursive_scanning=True), ["the ship"])) == 2


def test_world_info_puts_stable_entries_in_the_head_and_the_rest_in_the_turn_once() -> None:
    b = book(lore_entry(constant=True, content="Airships fly on lift-stone.", position="after_char"),
             lore_entry(keys=["storm"], content="The storm wall rings the north."),
             lore_entry(keys=["compass"], content="@@depth 0\nThe compass points home."),
             lore_entry(constant=True, content="@@activate_only_after 2\nLate constant."))
    wi = worldinfo.WorldInfo(b, 1000, len, "Mira", "Visitor", "en")
    assert wi.head() == {"after_desc": "Airships fly on lift-stone."}
    t1 = wi.turn(["Tell me of the storm and the compass"], char_messages=1)
    assert t1.before == "[World info]\nThe storm wall rings the north." and t1.after == "The compass points home."
    assert [f.entry.index for f in t1.fired] == [0, 1, 2] and t1.rendered == [1, 2]
    t2 = wi.turn(["Tell me of the storm and the compass", "...", "and the storm again?"], 2, present=t1.rendered)
    assert (t2.before, t2.after, t2.rendered) == ("[World info]\nLate constant.", "", [3])  # nothing repeated
    assert wi.head() == {"after_desc": "Airships fly on lift-stone."}  # the head never changes
    t3 = wi.turn(["What is for dinner?"], 3, present=[1, 2, 3])
    assert (t3.before, t3.after, t3.rendered) == ("", "", [])


def test_card_prompts_replace_ours_with_original_as_a_placeholder() -> None:
    assert spec.with_original("", "OURS") == "OURS"
    assert spec.with_original("Theirs only.", "OURS") == "Theirs only."
    assert spec.with_original("{{ORIGINAL}}\nAnd more.", "OURS") == "OURS\nAnd more."


def test_macros_are_case_insensitive() -> None:
    text = "{{char}} {{CHAR}} <BOT> <bot> <char> {{user}} {{User}} <USER> {{// a note}}end"
    assert spec.resolve(text, "Mira", "You") == "Mira Mira Mira Mira Mira You You You end"


# ------------------------------------------------------------------------------- in the prompt
SKY_BOOK = """Chapter 1

The Kestrel left the harbour at dawn with a crew of nine. Mira stood at the wheel and watched the clouds.

Chapter 2

Past the islands the wind turned cold, and the crew tied down the sails before the night came.
"""


class Recorder(BaseCallbackHandler):
    """Records the messages each chat-model call receives (LangChain's own callback, not a fake)."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        self.calls.append(list(messages[0]))


@pytest.fixture
def mira(zhiyin_home: Path, tmp_path: Path) -> str:
    """The V3 card imported, with a short book of her own built with the packaged USE embedder."""
    from knowledge_base.builder import build

    import_card(png_card({"ccv3": b64(v3_card())}), "mira.png")
    book = tmp_path / "in" / "sky.txt"
    book.parent.mkdir()
    book.write_text(SKY_BOOK, encoding="utf-8")
    build("Mira-Vale", [book], embedder="use")
    return "Mira-Vale"


@pytest.fixture
def tiny_llm(tiny_qwen_dir: Path):  # noqa: F811
    def make(recorder: Recorder | None = None):
        settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2,
                                 temperature=0, max_tokens=4)
        return llm.get_chat_model(settings, callbacks=[recorder] if recorder else None)

    return make


def test_the_cards_prompts_scenario_and_world_info_take_their_places(mira: str, tiny_llm) -> None:
    from ragchat import Companion

    bot = Companion(mira, mode="roleplay", llm=tiny_llm())
    p = bot.prepare("Tell me about the Kestrel and the storm wall.")
    system, turn = p.messages[0].content, p.prompt
    assert bot.system() == system  # the head start.py saves llama.cpp's state for (prepare_prefix)
    persona = bot.card.persona
    # Head: the stable constants where their position says (default before the description), the
    # scenario, and the card's system prompt with {{original}} standing for the role-play rules.
    assert system.startswith("Airships fly on lift-stone.\n\n" + persona)
    assert system.index("Visitor has stowed away") < system.index("Mira is thirty-four.")
    assert system.endswith("Answer in two or three sentences.\nStay in the sky.")
    # The turn: the fired keyword entries first, in insertion order; post-history instructions last.
    assert turn.startswith("[World info]\nThe Kestrel is a three-masted airship.\n\nThe storm wall is a ring")
    assert "Keep Mira terse. (" in turn.splitlines()[-1] and "Answer directly as yourself" in turn.splitlines()[-1]
    assert {f["label"] for f in p.fired} >= {"storm", "entry 1"} and p.tokens["lore"] > 0
    assert "Navigation by the stars." not in system + turn and "seed vault" not in system + turn
    assert bot.card.greetings and load_lorebook(mira)["entries"]  # a book added: the card's parts are kept
    reader = Companion(mira, mode="reader", llm=tiny_llm()).prepare("Tell me about the Kestrel.")
    assert "Stay in the sky." not in reader.messages[0].content and "Keep Mira terse" not in reader.prompt


def test_a_turn_that_fires_nothing_new_keeps_the_whole_prefix(mira: str, tiny_llm) -> None:
    from events import Sources
    from ragchat import Companion

    rec = Recorder()
    bot = Companion(mira, mode="roleplay", llm=tiny_llm(rec))
    lore = []
    for q in ("Tell me about the Kestrel.", "And the Kestrel's crew?", "Is the storm wall far?"):
        lore.append([e for e in list(bot.turn(q)) if isinstance(e, Sources)][0].lore)
    first, second, third = rec.calls

    def extends(after: list, before: list) -> bool:
        """``after`` begins with ``before``'s messages (its last one is the answer's given start, "I")."""
        n = len(before) - 1
        return ([m.content for m in after[:n]] == [m.content for m in before[:n]]
                and after[n].content.startswith(before[n].content))

    assert len({c[0].content for c in rec.calls}) == 1  # the head never changes
    assert extends(second, first)
    assert "[World info]" in first[-2].content and "Kestrel is a three-masted" in first[-2].content
    # Turn 2 names the Kestrel again: it fires (and is listed) but is not written twice.
    assert "[World info]" not in second[-2].content and any("key 'Kestrel'" in x for x in lore[1])
    assert extends(third, second)
    assert third[-2].content.startswith("[World info]\nThe storm wall") and "Kestrel is a" not in third[-2].content
    assert bot.history[0].lore == [1] and bot.history[1].lore == [] and bot.history[2].lore == [0]


# ------------------------------------------------------------------ the built-in characters' own books
def builtin_world(cid: str, lang: str) -> worldinfo.WorldInfo:
    from prompting import count_tokens

    return worldinfo.WorldInfo(load_lorebook(cid), 200, count_tokens, cid, "Visitor", lang)


@pytest.mark.parametrize("cid", ["daiyu", "elizabeth"])
def test_the_builtin_books_are_facts_placed_right_after_the_question(cid: str) -> None:
    from prompting import count_tokens

    parsed = lorebook.parse(load_lorebook(cid))  # the bundled knowledge/<id>/lorebook.json
    assert len(parsed.entries) >= 8
    for entry in parsed.entries:
        # @@depth 0: after the question, where a small model reads it last; never in the cached head.
        assert entry.keys and entry.content and entry.number("depth") == 0 and not entry.constant
        assert count_tokens(entry.content) <= 100  # three such entries fit the turn's 200 lore tokens


@pytest.mark.parametrize(("cid", "lang", "question", "fact"), [
    ("daiyu", "zh", "你外祖母是王夫人，对不对？", "贾母是你的外祖母"),
    ("daiyu", "zh", "你后来是不是嫁给了贾琏？", "你没有出嫁"),
    ("daiyu", "zh", "你有个弟弟在苏州读书，对吧？", "林家独女"),
    ("elizabeth", "en", "Your father is a clergyman, isn't he?", "a gentleman of Longbourn"),
    ("elizabeth", "en", "You are the eldest of the Bennet sisters, aren't you?", "second of five daughters"),
    ("elizabeth", "en", "Mr. Darcy's estate is in Kent, I believe?", "Pemberley, in Derbyshire"),
])
def test_a_wrong_premise_brings_the_fact_that_sets_it_right(cid: str, lang: str, question: str, fact: str) -> None:
    turn = builtin_world(cid, lang).turn([question], char_messages=0)
    assert fact in turn.after and not turn.before


@pytest.mark.parametrize(("cid", "lang", "question"), [
    ("daiyu", "zh", "你常在窗下做些什么消遣？"),
    ("elizabeth", "en", "Do you enjoy playing the pianoforte?"),
    ("elizabeth", "en", "Is the metal of this ring silver?"),  # whole words: "met" is not in "metal"
])
def test_an_ordinary_question_fires_nothing_and_costs_nothing(cid: str, lang: str, question: str) -> None:
    turn = builtin_world(cid, lang).turn([question], char_messages=0)
    assert (turn.before, turn.after, turn.fired) == ("", "", [])
