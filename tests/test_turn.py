"""A turn as one unit: one LangChain run, the live store, a failed generation, a card without a book."""
from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from knowledge_base.builder import build
from ragchat import Companion
from tests.test_ragchat import tiny_llm, zh_store  # noqa: F401  (pytest fixtures)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)


# ------------------------------------------------------- a turn: one run, live store, failures
class RunRecorder(BaseCallbackHandler):
    """Which runs start under which parent (LangChain's own callbacks)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, object, object]] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw) -> None:  # noqa: ANN001
        self.runs.append(("chain", run_id, parent_run_id))

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kw) -> None:  # noqa: ANN001
        self.runs.append(("retriever", run_id, parent_run_id))

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw) -> None:  # noqa: ANN001
        self.runs.append(("llm", run_id, parent_run_id))


def test_a_callback_handler_sees_retrieval_and_generation_inside_one_turn_run(zh_store, tiny_llm) -> None:
    rec = RunRecorder()
    bot = Companion(zh_store, llm=tiny_llm())
    list(bot.turn("黛玉给鹦鹉取的名字叫什么？", callbacks=[rec]))
    kinds = [k for k, _, _ in rec.runs]
    assert kinds[0] == "chain" and "retriever" in kinds and "llm" in kinds
    turn_id = rec.runs[0][1]
    assert all(parent == turn_id for kind, _, parent in rec.runs if kind != "chain")


def test_an_open_conversation_sees_its_store_rebuilt(zh_store, tiny_llm, tmp_path: Path) -> None:
    bot = Companion(zh_store, llm=tiny_llm())
    first = bot.ask("紫鹃的风筝是什么颜色？")
    assert not any("朱红" in s["passage"] for s in first.sources)
    book = tmp_path / "in2" / "kite.txt"
    book.parent.mkdir()
    book.write_text("第七十回 放风筝\n紫鹃放起一只朱红的大蝴蝶风筝，线断了，风筝飘到天边去了。黛玉笑道：“这一去把病根儿也带走了。”",
                    encoding="utf-8")
    build(zh_store, [book], embedder="use")
    build(zh_store, [book], embedder="use", rebuild=True)  # two builds: the first version is now gone
    again = bot.ask("紫鹃放的风筝是什么颜色的？")
    assert any("朱红" in s["passage"] for s in again.sources)


class Broken(RuntimeError):
    pass


def test_a_failed_generation_records_nothing_and_its_passages_can_be_sent_again(zh_store, tiny_llm) -> None:
    bot = Companion(zh_store, llm=tiny_llm())
    real = bot.llm

    class Failing:
        supports_prefill = False

        def stream(self, *a, **kw):  # noqa: ANN002, ANN003
            yield from ()
            raise Broken("the model crashed")

    bot._llm = Failing()
    with pytest.raises(Broken):
        list(bot.turn("黛玉给鹦鹉取的名字叫什么？"))
    assert bot.history == [] and bot._seen == set()
    bot._llm = real
    done = bot.ask("黛玉给鹦鹉取的名字叫什么？")
    assert done.sources and len(bot.history) == 1  # the same passages are sent, not skipped as 'seen'


def test_a_replaced_store_version_is_kept_for_a_grace_period(zh_store, tmp_path: Path, monkeypatch) -> None:
    from knowledge_base import versions as builder
    from knowledge_base.store import KnowledgeStore, current_version, store_root

    old = KnowledgeStore.open(zh_store)  # another process searching the version about to be replaced
    build(zh_store, embedder="use", rebuild=True)
    build(zh_store, embedder="use", rebuild=True)
    assert old.version.is_dir() and old.search("鹦鹉", k=2)  # still answers inside the grace period
    monkeypatch.setattr(builder, "RETIRED_GRACE_S", 0)
    build(zh_store, embedder="use", rebuild=True)
    assert not old.version.exists()
    assert current_version(store_root(zh_store)).is_dir()


def test_a_character_from_a_card_alone_chats_without_a_book(tiny_llm) -> None:
    from characters import create_character

    create_character("mira", "Mira", "en")  # a card and no book, as an imported character card is
    done = Companion("mira", mode="roleplay", llm=tiny_llm()).ask("Hello, who are you?")
    assert done.answer and done.sources == [] and done.warning
