"""conversations/: saved as they happen in a real SQLite file, resumed with the same prompt prefix, swipes and
branches, and the bad inputs (a damaged or locked file, 5,000 turns, two writers, odd reader names).

Turns run the tiny random Qwen2 (tests/tiny_model.py) over a small real store; its words are noise, so
these tests check what is sent and saved, not what she says.
"""
# ruff: noqa: F811  (pytest fixtures imported from other test files are redefined as arguments)
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

import cli
from conversations import ConversationError, ConversationStore, open_or_create, open_store, reader_name
from conversations.saved import turns_of
from events import Done, TextDelta
from ragchat import Budget, Turn
from tests.conftest import REPO
from tests.test_ragchat import Recorder, tiny_llm, zh_store  # noqa: F401  (pytest fixtures)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

QUESTIONS = ["黛玉给鹦鹉取的名字叫什么？", "宝玉穿的蓑衣是谁送的？", "菊花诗会谁起的社？", "黛玉夜里写了几首诗？"]


@pytest.fixture
def db(zhiyin_home: Path) -> ConversationStore:
    return ConversationStore(zhiyin_home / "conversations.db")


def fill(store: ConversationStore, turns: int, character: str = "daiyu", reader: str = "r") -> int:
    """A conversation of ``turns`` saved turns, written directly (fast) in the shape SavedConversation writes."""
    cid = store.create(character, reader, "reader", "long")
    with sqlite3.connect(store.path) as con:
        parent = None
        for i in range(turns):
            for role, text in (("user", f"问题{i}：宝玉今天来过吗？"), ("assistant", f"回答{i}：来过了，坐了一会儿就走了。")):
                cur = con.execute("INSERT INTO messages (conversation_id, parent_id, role, content, prompt, mode, "
                                  "created_at) VALUES (?, ?, ?, ?, ?, 'reader', '2025')",
                                  (cid, parent, role, text, f"【问题】\n{text}" if role == "assistant" else None))
                parent = cur.lastrowid
        con.execute("UPDATE conversations SET head_id = ? WHERE id = ?", (parent, cid))
    return cid


# ------------------------------------------------------------------------------ the file
def test_migrations_build_the_schema_once_and_upgrade_an_old_file(zhiyin_home: Path) -> None:
    path = zhiyin_home / "conversations.db"
    ConversationStore(path)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == ["m001_conversations_and_messages", "m002_memories"]
        # An older file: only the first migration applied.
        con.execute("DROP TABLE memories")
        con.execute("DELETE FROM _migrations WHERE name = 'm002_memories'")
    store = ConversationStore(path)
    assert store.remember("r", "daiyu", "like", "我喜欢栀子花") is not None
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == 2


def test_a_damaged_file_is_reported_never_overwritten_and_chat_goes_on_in_memory(zhiyin_home: Path, zh_store,
                                                                                 tiny_llm) -> None:
    path = zhiyin_home / "conversations.db"
    garbage = b"this is not a database, it is a letter to Baoyu " * 100
    path.write_bytes(garbage)
    with pytest.raises(ConversationError, match="damaged.*Move it aside"):
        ConversationStore(path)
    store, problem = open_store()
    assert "damaged" in problem and not store.persistent
    conv = open_or_create(zh_store, "小雨", store=store, llm=tiny_llm())
    assert conv.companion.ask(QUESTIONS[0]).answer is not None  # the companion works
    list(conv.turn(QUESTIONS[1]))
    assert len(conv.path()) == 2 and conv.companion.history
    assert path.read_bytes() == garbage


def test_a_locked_file_costs_the_save_not_the_answer(db: ConversationStore, zh_store, tiny_llm) -> None:
    conv = open_or_create(zh_store, "小雨", store=ConversationStore(db.path, timeout=0.2), llm=tiny_llm())
    list(conv.turn(QUESTIONS[0]))
    saved_id = conv.id
    blocker = sqlite3.connect(db.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        events = list(conv.turn(QUESTIONS[1]))
        assert isinstance(events[-1], Done)
        assert "locked" in conv.warning and "without being saved" in conv.warning
        assert [m.role for m in conv.path()] == ["user", "assistant"] * 2  # shown and kept, in memory
        assert db.list(zh_store)[0].messages == 2  # reading still works while it is locked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [m.content for m in db.messages(saved_id).values()][0] == QUESTIONS[0]
    assert len(db.messages(saved_id)) == 2  # nothing half-written


def test_two_writers_on_one_conversation_lose_no_turns(db: ConversationStore) -> None:
    cid = db.create("daiyu", "r", "reader")

    def write(tag: str, n: int = 40) -> None:
        for i in range(n):
            q = db.add_message(cid, None, "user", f"{tag}{i}", mode="reader")
            db.add_message(cid, q, "assistant", f"answer {tag}{i}", mode="reader", prompt="p")

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    # A second process writes too, as the API server would.
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from conversations import ConversationStore\n"
            f"db = ConversationStore({db.path!r})\n"
            f"for i in range(40):\n    q = db.add_message({cid}, None, 'user', f'c{{i}}', mode='reader')\n"
            f"    db.add_message({cid}, q, 'assistant', 'x', mode='reader')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    for t in threads:
        t.join()
    assert proc.returncode == 0, proc.stderr
    questions = [m.content for m in db.messages(cid).values() if m.role == "user"]
    assert sorted(questions) == sorted(f"{t}{i}" for t in "abc" for i in range(40))


@pytest.mark.parametrize("name", ["🌸小雨👩‍👩‍👧", "O'Brien \"Bob\"", "../../etc/passwd", "x'); DROP TABLE messages;--",
                                  "名" * 128])
def test_odd_reader_names_are_only_names(db: ConversationStore, zhiyin_home: Path, name: str) -> None:
    assert reader_name(name) == name
    conv = open_or_create("daiyu", name, store=db, llm=object())
    assert conv.reader == name
    cid = db.create("daiyu", conv.reader, "reader")
    db.remember(name, "daiyu", "name", "我叫小雨")
    assert [c.id for c in db.list("daiyu", name)] == [cid]
    assert db.memories(name, "daiyu")[0].text == "我叫小雨" and not db.memories("guest", "daiyu")
    assert sorted(p.name for p in zhiyin_home.iterdir()) == ["conversations.db", "conversations.db-shm",
                                                             "conversations.db-wal"] or \
        sorted(p.name for p in zhiyin_home.iterdir()) == ["conversations.db"]


def test_reader_names_are_normalised_or_refused_with_a_reason() -> None:
    assert reader_name("  小雨 \n 同学\x00 ") == "小雨 同学"
    assert reader_name("", "guest") == reader_name(None, "guest") == "guest"
    with pytest.raises(ConversationError, match="at most 128 characters"):
        reader_name("x" * 129)


def test_a_5000_turn_conversation_opens_with_a_few_queries_in_seconds(db: ConversationStore,
                                                                               zh_store, monkeypatch) -> None:
    cid = fill(db, 5000)
    opened = []
    real = ConversationStore._connect
    monkeypatch.setattr(ConversationStore, "_connect", lambda self: opened.append(1) or real(self))
    t0 = time.perf_counter()
    conv = open_or_create(zh_store, "r", conversation_id=cid, store=db, llm=object())
    seconds = time.perf_counter() - t0  # bench/memory_bench.py measures this on an idle machine
    assert len(opened) <= 3  # a few, not one per turn: the conversation row, then every message in one query
    assert len(conv.path()) == 10000 and len(conv.companion.history) == 5000
    assert 0 < conv.companion._first_kept < 5000  # trimmed as it would have been live
    assert seconds < 5, seconds


# -------------------------------------------------------------------------- saved turns
def test_turns_are_saved_as_they_happen_and_resume_with_the_same_prompt(db: ConversationStore, zh_store,
                                                                       tiny_llm) -> None:
    budget = Budget(passages=100, followup_passages=100, passage=100, examples=0, history=300)
    conv = open_or_create(zh_store, "小雨", "reader", store=db, llm=tiny_llm(max_tokens=8), budget=budget)
    assert conv.id is None and not db.list(zh_store)  # nothing saved before the first question
    for q in QUESTIONS:
        list(conv.turn(q))
    info = db.list(zh_store, "小雨")[0]
    assert info.id == conv.id and info.title == QUESTIONS[0] and info.messages == 8
    saved = [m for m in db.messages(conv.id).values() if m.role == "assistant"]
    for turn, m in zip(conv.companion.history, saved, strict=True):
        assert (m.prompt, m.content, m.sources) == (turn.prompt, turn.answer, turn.sources)
        assert m.timings["first_token_ms"] > 0 and m.tokens["question"] > 0 and m.model
    # A restart: the same conversation opened in a new Companion builds the very same next prompt.
    assert conv.companion._first_kept > 0, "the history budget was exceeded: trimming and a summary happened"
    again = open_or_create(zh_store, "小雨", conversation_id=str(conv.id), store=db, llm=tiny_llm(max_tokens=8),
                           budget=budget)
    live = conv.companion.prepare("雪团儿会念哪句诗？")
    resumed = again.companion.prepare("雪团儿会念哪句诗？")
    assert [(type(m), m.content) for m in resumed.messages] == [(type(m), m.content) for m in live.messages]
    assert "【此前谈话的摘要】" in str(live.messages[0].content)
    assert open_or_create(zh_store, "小雨", conversation_id="last", store=db, llm=object()).id == conv.id


def test_regenerate_keeps_swipes_and_the_picked_one_is_what_the_next_turn_sees(db: ConversationStore, zh_store,
                                                                             tiny_qwen_dir: Path) -> None:
    import llm
    from settings import load_settings

    rec = Recorder()
    model = llm.get_chat_model(load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2,
                                             temperature=1.0, max_tokens=6), callbacks=[rec])
    conv = open_or_create(zh_store, "小雨", "roleplay", store=db, llm=model)
    list(conv.turn(QUESTIONS[0]))
    n = len(rec.calls)  # the tiny model's noise may trip the persona guard: a turn can take two calls
    list(conv.turn(QUESTIONS[1]))
    first = conv.path()[-1]
    assert conv.regenerate() == QUESTIONS[1]
    again = len(rec.calls)
    list(conv.turn(QUESTIONS[1], temperature=1.5))
    shown = conv.shown()
    assert [s.message.role for s in shown] == ["user", "assistant"] * 2  # the question was not asked twice
    assert shown[-1].alternatives == (first.id, conv.head) and shown[-1].position == 1
    # The new answer was asked over the same conversation: the same prefix, the same turn prompt.
    def upto_question(call: list) -> list[str]:
        return [m.content for m in call[: max(i for i, m in enumerate(call) if isinstance(m, HumanMessage)) + 1]]

    assert upto_question(rec.calls[again]) == upto_question(rec.calls[n])
    conv.select(first.id)  # page back to the first answer and pick it
    assert conv.path()[-1].id == first.id and db.get(conv.id).head_id == first.id
    list(conv.turn(QUESTIONS[2]))
    sent = rec.calls[-1]
    asked = max(i for i, m in enumerate(sent) if isinstance(m, HumanMessage))  # a prefill may follow it
    assert sent[asked - 1].content == first.content  # what the next turn sees is the picked answer
    reopened = open_or_create(zh_store, "小雨", conversation_id=conv.id, store=db, llm=object())
    assert [m.id for m in reopened.path()][:4] == [m.id for m in conv.path()][:4]


def test_an_edited_question_starts_a_branch_and_the_old_one_stays(db: ConversationStore, zh_store,
                                                                  tiny_llm) -> None:
    conv = open_or_create(zh_store, "小雨", store=db, llm=tiny_llm())
    for q in QUESTIONS[:3]:
        list(conv.turn(q))
    old = conv.path()
    conv.edit(old[2].id)  # ask the second question differently
    list(conv.turn("宝玉的蓑衣是哪里来的？"))
    new = conv.shown()
    assert [s.message.content for s in new if s.message.role == "user"] == [QUESTIONS[0], "宝玉的蓑衣是哪里来的？"]
    assert new[2].alternatives == (old[2].id, new[2].message.id)
    assert [t.question for t in conv.companion.history] == [QUESTIONS[0], "宝玉的蓑衣是哪里来的？"]
    conv.select(old[2].id)  # the old branch, down to its latest message
    assert [m.id for m in conv.path()] == [m.id for m in old]


def test_deleting_a_turn_keeps_what_followed(db: ConversationStore, zh_store, tiny_llm) -> None:
    conv = open_or_create(zh_store, "小雨", store=db, llm=tiny_llm())
    for q in QUESTIONS[:3]:
        list(conv.turn(q))
    second = conv.path()[2]
    conv.delete_turn(second.id)
    assert [t.question for t in conv.companion.history] == [QUESTIONS[0], QUESTIONS[2]]
    assert [m.content for m in conv.path() if m.role == "user"] == [QUESTIONS[0], QUESTIONS[2]]
    conv.delete_turn(conv.path()[-2].id)  # the last one: the head moves back
    assert [t.question for t in conv.companion.history] == [QUESTIONS[0]]
    assert db.get(conv.id).head_id == conv.path()[-1].id


def test_a_stopped_answer_is_saved_as_shown_and_a_failed_one_keeps_the_question(db: ConversationStore, zh_store,
                                                                              tiny_llm) -> None:
    conv = open_or_create(zh_store, "小雨", store=db, llm=tiny_llm(max_tokens=30))
    events = conv.turn(QUESTIONS[0])
    shown = ""
    for event in events:
        if isinstance(event, TextDelta):
            shown += event.text
            if len(shown) > 3:
                break
    events.close()
    answer = conv.path()[-1]
    assert answer.role == "assistant" and answer.content == shown.strip() and answer.timings == {"stopped": True}

    class Broken:
        def stream(self, *a, **k):  # noqa: ANN002, ANN003
            raise RuntimeError("the model crashed")

    conv.companion._llm = Broken()
    with pytest.raises(RuntimeError):
        list(conv.turn(QUESTIONS[1]))
    assert conv.path()[-1].content == QUESTIONS[1]  # shown on the page: kept, waiting for an answer
    assert len(conv.companion.history) == 1
    conv.companion._llm = tiny_llm()
    list(conv.turn(QUESTIONS[1]))  # asked again: answered under the same question
    assert [m.role for m in conv.path()] == ["user", "assistant"] * 2 and len(db.messages(conv.id)) == 4


def test_turns_of_skips_an_unanswered_question() -> None:
    from conversations import StoredMessage

    path = [StoredMessage(1, None, "user", "q", "reader", ""), StoredMessage(2, 1, "assistant", "a", "reader", "", "p"),
            StoredMessage(3, 2, "user", "q2", "reader", "")]
    assert turns_of(path) == [Turn("q", "p", "a", [])]


def test_a_conversation_of_another_reader_or_character_is_not_opened(db: ConversationStore) -> None:
    cid = db.create("daiyu", "小雨", "reader")
    for who, character in (("阿青", "daiyu"), ("小雨", "elizabeth")):
        with pytest.raises(ConversationError, match=f"no conversation {cid}"):
            open_or_create(character, who, conversation_id=cid, store=db, llm=object())
    with pytest.raises(ConversationError, match="roleplay mode|reader mode"):
        open_or_create("daiyu", "小雨", "roleplay", conversation_id=cid, store=db, llm=object())
    with pytest.raises(ConversationError, match="not a conversation id"):
        open_or_create("daiyu", "小雨", conversation_id="../1", store=db, llm=object())


# ----------------------------------------------------------------------------------- CLI
def test_cli_saves_resumes_lists_and_exports(zh_store, tiny_qwen_dir: Path, monkeypatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ZHIYIN_LLM_BACKEND", "transformers")
    monkeypatch.setenv("ZHIYIN_LLM_MODEL", str(tiny_qwen_dir))
    monkeypatch.setenv("ZHIYIN_MAX_TOKENS", "6")
    assert cli.main([zh_store, "--user", "小雨", "-q", "我叫小雨，最喜欢栀子花。", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]  # a list, a turn per question, as before
    assert first["conversation"] and first["question"] == "我叫小雨，最喜欢栀子花。"
    assert cli.main([zh_store, "--user", "小雨", "--conversation", "last", "-q", QUESTIONS[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["conversation"] == first["conversation"]
    assert cli.main(["--list", zh_store, "--user", "小雨", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in listed] == [first["conversation"]] and listed[0]["messages"] == 4
    assert cli.main(["--list", zh_store, "--user", "阿青"]) == 0 and "no conversations" in capsys.readouterr().err
    assert cli.main([zh_store, "--user", "小雨", "--conversation", str(first["conversation"]),
                     "--export", "md"]) == 0
    assert "**You:** 我叫小雨，最喜欢栀子花。" in capsys.readouterr().out
    assert cli.main([zh_store, "--user", "阿青", "--conversation", str(first["conversation"]), "-q", "x"]) == 2
    assert "no conversation" in capsys.readouterr().err
