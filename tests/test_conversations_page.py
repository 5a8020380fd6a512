"""The chat page's saved conversations, driven headless with Streamlit's AppTest: listing, resuming after a
reload, renaming, deleting (it asks once), regenerate and page through her answers, edit a question into a
new branch, delete a turn, and "what she remembers about you" with forgetting.

The chat model is the tiny random Qwen2 through the real transformers backend (its words are noise); the
store is built for real with USE; the conversations go to a real SQLite file in the test's ZHIYIN_HOME.
"""
# ruff: noqa: F811  (pytest fixtures imported from other test files are redefined as arguments)
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conversations import ConversationStore
from tests.test_app import app_env, assert_clean, daiyu_store, start, texts  # noqa: F401  (fixtures, helpers)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)


@pytest.fixture
def db(zhiyin_home: Path) -> ConversationStore:
    return ConversationStore(zhiyin_home / "conversations.db")


def quiet(reader: str = "小雨", query: dict | None = None) -> AppTest:
    """The page with speech off and the reader's name typed in."""
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180)
    at.query_params.update(query or {})
    at.run()
    at.toggle(key="voice").set_value(False).run()
    if at.sidebar.text_input(key="reader").value != reader:
        at.sidebar.text_input(key="reader").set_value(reader).run()
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    return at


def conversations_box(at: AppTest):
    return next(s for s in at.sidebar.selectbox if s.label == "Conversations")


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.markdown[0].value if m.markdown else "") for m in at.chat_message]


def test_conversations_are_listed_resumed_after_a_reload_and_renamed(daiyu_store: str, db: ConversationStore) -> None:
    at = ask(quiet(), "黛玉给鹦鹉取的名字叫什么？")
    saved = at.session_state["conv"].saved
    assert saved.id is not None and at.query_params["c"] == [str(saved.id)]
    ask(at, "宝玉来过吗？")
    shown = bubbles(at)
    assert [n for n, _ in shown] == ["assistant", "user", "assistant", "user", "assistant"]
    # A reload (a new session with the same address) shows the same conversation, answers and all.
    again = quiet(query={"reader": "小雨", "c": str(saved.id)})
    assert_clean(again)
    assert [t for _, t in bubbles(again)][1:] == [t for _, t in shown][1:]
    assert again.session_state["conv"].saved.id == saved.id
    # A second conversation; both are listed (title from the first question, length), the newest first.
    again.sidebar.button[0].click().run()  # 🆕 New conversation
    ask(again, "菊花诗会谁得了第一？")
    box = conversations_box(again)
    assert box.options[0].startswith("📖 菊花诗会谁得了第一？") and "2 messages" in box.options[0]
    assert "黛玉给鹦鹉取的名字叫什么？" in box.options[1] and "4 messages" in box.options[1]
    # Resume the first one from the list.
    box.set_value(saved.id).run()
    assert_clean(again)
    assert [t for _, t in bubbles(again)][1:] == [t for _, t in shown][1:]
    # Rename it.
    again.sidebar.text_input(key=f"title-{saved.id}").set_value("鹦鹉的名字").run()
    assert db.get(saved.id).title == "鹦鹉的名字"
    assert conversations_box(again).options[0].startswith("📖 鹦鹉的名字")
    # Another reader sees none of them.
    other = quiet("阿青")
    assert conversations_box(other).options == ["🆕 (this new conversation)"]


def test_deleting_a_conversation_asks_once(daiyu_store: str, db: ConversationStore) -> None:
    at = ask(quiet(), "黛玉给鹦鹉取的名字叫什么？")
    cid = at.session_state["conv"].saved.id
    at.sidebar.button(key="delete_conversation").click().run()
    assert any("Delete “黛玉给鹦鹉取的名字叫什么？”" in w for w in texts(at.sidebar.warning))
    assert db.get(cid) is not None  # not yet
    at.sidebar.button(key="keep").click().run()
    assert db.get(cid) is not None and not at.sidebar.warning
    at.sidebar.button(key="delete_conversation").click().run()
    at.sidebar.button(key="confirm_delete").click().run()
    assert_clean(at)
    assert db.get(cid) is None and len(at.chat_message) == 1  # a new conversation: the greeting only
    assert any("deleted" in s for s in texts(at.success))


def test_regenerate_then_page_through_her_answers_and_pick_one(daiyu_store: str, db: ConversationStore) -> None:
    at = ask(quiet(), "黛玉给鹦鹉取的名字叫什么？")
    first = at.session_state["conv"].saved.head
    first_text = bubbles(at)[-1][1]
    at.button(key=f"regenerate-{first}").click().run()
    assert_clean(at)
    saved = at.session_state["conv"].saved
    second = saved.head
    assert second != first and [n for n, _ in bubbles(at)] == ["assistant", "user", "assistant"]
    assert saved.shown()[-1].alternatives == (first, second)
    at.run()  # drawn again from the saved path: 2/2 with ◀ enabled
    assert "2/2" in texts(at.caption)
    at.button(key=f"prev-{second}").click().run()  # back to the first answer: it is the one picked
    assert_clean(at)
    assert bubbles(at)[-1][1] == first_text and "1/2" in texts(at.caption)
    assert db.get(saved.id).head_id == first
    ask(at, "宝玉来过吗？")
    assert at.session_state["conv"].companion.history[0].answer == db.messages(saved.id)[first].content


def test_edit_a_question_into_a_new_branch_and_delete_a_turn(daiyu_store: str, db: ConversationStore) -> None:
    at = ask(ask(quiet(), "黛玉给鹦鹉取的名字叫什么？"), "宝玉来过吗？")
    saved = at.session_state["conv"].saved
    second_q = saved.path()[2].id
    at.button(key=f"edit-{second_q}").click().run()
    at.text_area(key=f"edit-text-{second_q}").set_value("宝玉今天穿的是什么？")
    at.button(key=f"send-edit-{second_q}").click().run()
    assert_clean(at)
    questions = [t for n, t in bubbles(at) if n == "user"]
    assert questions == ["黛玉给鹦鹉取的名字叫什么？", "宝玉今天穿的是什么？"]
    at.run()
    new_q = saved.path()[2].id
    assert saved.shown()[2].alternatives == (second_q, new_q)
    at.button(key=f"prev-{new_q}").click().run()  # the old branch is still there
    assert [t for n, t in bubbles(at) if n == "user"] == ["黛玉给鹦鹉取的名字叫什么？", "宝玉来过吗？"]
    # Delete the first turn: asks once, then what followed stays.
    first_q = saved.path()[0].id
    at.button(key=f"delete-{first_q}").click().run()
    assert any("Delete this question" in w for w in texts(at.warning))
    at.button(key=f"confirm-delete-{first_q}").click().run()
    assert_clean(at)
    assert [t for n, t in bubbles(at) if n == "user"] == ["宝玉来过吗？"]


def test_what_she_remembers_is_shown_corrected_and_forgotten(daiyu_store: str, db: ConversationStore) -> None:
    at = ask(quiet(), "我叫小雨，我最喜欢栀子花。")
    assert [m.text for m in db.memories("小雨", "daiyu")] == ["我叫小雨", "我最喜欢栀子花"]
    assert [e.label for e in at.sidebar.expander] == ["🧠 What she remembers about you (2)"]
    name, flower = db.memories("小雨", "daiyu")
    at.sidebar.text_input(key=f"memory-{flower.id}").set_value("我最喜欢茉莉花").run()
    assert [m.text for m in db.memories("小雨", "daiyu")] == ["我叫小雨", "我最喜欢茉莉花"]
    # A new conversation: her first prompt carries what she remembers, in the turn's own message.
    at.sidebar.button[0].click().run()
    ask(at, "你好，还记得我吗？")
    prompt = at.session_state["conv"].companion.history[-1].prompt
    assert "“我叫小雨”" in prompt and "“我最喜欢茉莉花”" in prompt and "栀子花" not in prompt
    at.sidebar.button(key=f"forget-{name.id}").click().run()
    assert [m.text for m in db.memories("小雨", "daiyu")] == ["我最喜欢茉莉花"]
    at.sidebar.button(key="forget_all").click().run()
    assert db.memories("小雨", "daiyu")  # it asks first
    at.sidebar.button(key="confirm_forget_all").click().run()
    assert_clean(at)
    assert not db.memories("小雨", "daiyu")
    assert any("remembers nothing about you" in c for c in texts(at.sidebar.caption))


def test_a_damaged_database_is_one_warning_and_the_page_still_chats(daiyu_store: str, zhiyin_home: Path) -> None:
    path = zhiyin_home / "conversations.db"
    path.write_bytes(b"not a database" * 64)
    at = ask(quiet(), "黛玉给鹦鹉取的名字叫什么？")
    assert any("damaged" in w and "kept in memory only" in w for w in texts(at.warning))
    assert [n for n, _ in bubbles(at)] == ["assistant", "user", "assistant"]
    assert path.read_bytes() == b"not a database" * 64
