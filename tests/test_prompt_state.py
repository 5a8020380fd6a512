"""llm/prompt_state.py: a first turn restores her prompt head's saved llama.cpp state instead of evaluating it."""
from __future__ import annotations

import pytest

from characters import load_card
from prompting import MODES, Budget, system_prompt
from settings import load_settings

pytestmark = pytest.mark.slow  # the packaged GGUF


def test_a_first_turn_evaluates_only_what_follows_the_saved_head(zhiyin_home) -> None:
    import llm
    from langchain_core.messages import HumanMessage, SystemMessage
    from llm import prompt_state

    llm.prepare_default_model()
    model = llm.get_chat_model(load_settings(max_tokens=2, temperature=0, threads=2))
    head = system_prompt(load_card("daiyu"), MODES.create("roleplay"), Budget())
    assert model.prepare_prefix(head) is True and prompt_state.has_state(model.model_path, head)
    assert model.prepare_prefix(head) is False  # once per model and head
    other = system_prompt(load_card("elizabeth"), MODES.create("reader"), Budget())
    list(model.stream([SystemMessage(other), HumanMessage("Who is Jane?")]))  # the slot now holds another head

    def cached_tokens() -> tuple[int, int]:
        chunks = list(model.stream([SystemMessage(head), HumanMessage("你喜欢潇湘馆吗？")]))
        t = next(c.response_metadata["timings"] for c in chunks if "timings" in c.response_metadata)
        return int(t["cache_n"]), int(t["prompt_n"])

    assert model.restore_prefix(head) is True
    cached, evaluated = cached_tokens()
    assert cached >= 300 and evaluated < 30, (cached, evaluated)
    # A changed card is another head: no stale state is restored for it.
    assert model.restore_prefix(head + "（改过的卡片）") is False

    # In role-play the head goes on with her card's example exchanges, sent as turns: saved with it.
    # (One test: the resident llama.cpp server keeps the folder of the home it was started in.)
    from ragchat import Companion

    turns = Companion("elizabeth", mode="roleplay", llm=model).head()
    assert len(turns) >= 3 and model.prepare_prefix(turns) is True
    assert prompt_state.state_name(model.model_path, turns) != prompt_state.state_name(model.model_path, str(turns[0].content))
    list(model.stream([turns[0], HumanMessage("Who is Jane?")]))  # the slot now holds a shorter head
    assert model.restore_prefix(turns) is True
    chunks = list(model.stream([*turns, HumanMessage("Do you like Kent?")]))
    t = next(c.response_metadata["timings"] for c in chunks if "timings" in c.response_metadata)
    assert int(t["cache_n"]) >= 400 and int(t["prompt_n"]) < 30, t
