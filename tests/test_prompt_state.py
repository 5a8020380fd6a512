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
