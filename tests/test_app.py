"""The Streamlit page driven headless with AppTest, and the ui/ helpers it stands on.

The chat model is the tiny random Qwen2 from tests/tiny_model.py (its words are noise, but it is
loaded, prompted and streamed by the real transformers backend); stores are built for real with
the packaged USE embedder; speech is real espeak-ng.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import gen_chroma
from characters import CharacterError, avatar_path, load_card
from knowledge_base.builder import build
from knowledge_base.reading import ReadError
from knowledge_base.store import KnowledgeStore
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)
from ui import chat, errors, knowledge

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
TIMEOUT = 180  # first runs load torch, the tiny model and the embedder on a busy CPU

GB_BOOK = ("第一回 甄士隐梦幻识通灵\n林黛玉初进荣国府，见了宝玉，心下想道：好生奇怪。\n\n"
           "第二回 贾夫人仙逝扬州城\n黛玉葬花，吟出葬花吟，宝玉听了不觉痴倒。镕（GB18030）\n").encode("gb18030")


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tiny_qwen_dir: Path) -> Path:  # noqa: F811
    """The tiny model through the transformers backend, short answers, espeak for speech."""
    monkeypatch.setenv("ZHIYIN_LLM_BACKEND", "transformers")
    monkeypatch.setenv("ZHIYIN_LLM_MODEL", str(tiny_qwen_dir))
    monkeypatch.setenv("ZHIYIN_MAX_TOKENS", "12")
    monkeypatch.setenv("ZHIYIN_THREADS", "2")
    monkeypatch.setenv("ZHIYIN_TTS_ENGINE", "espeak")
    monkeypatch.setenv("ZHIYIN_EMBEDDER", "use")  # no background upgrade processes (one test turns it on)
    return tiny_qwen_dir


@pytest.fixture
def daiyu_store(app_env: Path) -> str:
    build("daiyu", embedder="use")
    return "daiyu"


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.sidebar.radio(key="page").set_value(page).run()
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def assert_clean(at: AppTest) -> None:
    """No stack trace on the page."""
    assert not at.exception, [e.value for e in at.exception]


# ------------------------------------------------------------------------------ the page
def test_pick_character_ask_and_see_streamed_answer_sources_and_speech(daiyu_store: str) -> None:
    at = start()
    assert_clean(at)
    assert at.selectbox(key="character").value == "daiyu"
    assert "潇湘馆" in at.chat_message[0].markdown[0].value  # the greeting opens the conversation
    assert at.sidebar.get("image"), "the portrait is shown beside the picker"

    at.chat_input[0].set_value("宝玉是谁？").run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    names = [m.name for m in at.chat_message]
    assert names == ["assistant", "user", "assistant"]
    conv = at.session_state["conv"]
    bot = conv.companion
    answer = at.chat_message[2].markdown[0].value
    assert answer and answer == bot.history[-1].answer.strip() or answer == conv.messages[-1].content
    shown = conv.messages[-1]
    assert "s to the first word" in shown.note
    # Sources: an expander whose passages carry the matched word highlighted.
    assert shown.sources == bot.history[-1].sources
    assert [e.label for e in at.expander] == [f"Sources ({len(shown.sources)})"]
    body = at.expander[0].markdown[0].value
    assert ":orange-background[**宝玉**]" in body
    # Speech: one WAV per sentence, kept with the message.
    assert conv.messages[-1].audio and conv.messages[-1].audio[0][:4] == b"RIFF"
    assert at.get("audio")


def test_switching_mode_starts_a_roleplay_conversation(daiyu_store: str) -> None:
    at = start()
    at.toggle(key="voice").set_value(False).run()
    at.chat_input[0].set_value("黛玉住在哪里？").run()
    assert len(at.chat_message) == 3
    at.sidebar.radio(key="mode").set_value("roleplay").run()
    assert_clean(at)
    assert len(at.chat_message) == 1  # a new conversation with the greeting only
    assert at.session_state["conv"].companion.mode.name == "roleplay"
    at.chat_input[0].set_value("你好").run()
    assert not at.error, texts(at.error)
    assert [m.name for m in at.chat_message] == ["assistant", "user", "assistant"]


def test_new_conversation_and_export_buttons(daiyu_store: str) -> None:
    at = start()
    at.toggle(key="voice").set_value(False).run()
    at.chat_input[0].set_value("葬花").run()
    bot = at.session_state["conv"].companion
    assert "**You:** 葬花" in bot.export_markdown()
    assert len(at.get("download_button")) == 2
    at.sidebar.button[0].click().run()  # 🆕 New conversation
    assert len(at.chat_message) == 1 and not at.session_state["conv"].companion.history


def test_asking_before_any_knowledge_exists_says_to_add_a_book(app_env: Path) -> None:
    at = start()
    at.selectbox(key="character").set_value("elizabeth").run()
    assert_clean(at)
    assert "Good day" in at.chat_message[0].markdown[0].value
    assert any("add a book" in w for w in texts(at.warning))
    at.chat_input[0].set_value("Who is Mr. Darcy?").run()
    assert_clean(at)
    assert any("add a book on the Knowledge page" in e for e in texts(at.error))
    assert len(at.chat_message) == 1  # nothing was sent to the model


def test_missing_model_is_one_sentence_not_a_trace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZHIYIN_LLM_BACKEND", "llamacpp")
    monkeypatch.setenv("ZHIYIN_LLM_MODEL", str(tmp_path / "missing.gguf"))
    at = start()
    assert_clean(at)
    assert any("No GGUF model" in e and "python -m llm prepare" in e for e in texts(at.error))


def test_two_sessions_have_their_own_conversations(daiyu_store: str) -> None:
    first, second = start(), start()
    for at in (first, second):
        at.toggle(key="voice").set_value(False).run()
    first.chat_input[0].set_value("宝玉").run()
    assert len(first.chat_message) == 3 and len(second.chat_message) == 1
    assert first.session_state["conv"] is not second.session_state["conv"]


def test_knowledge_page_reads_a_gb18030_upload_and_rebuilds(app_env: Path) -> None:
    at = start("Knowledge")
    assert_clean(at)
    assert any("no knowledge store yet" in w for w in texts(at.warning))
    at.file_uploader(key="books").set_value(("红楼梦选段.txt", GB_BOOK, "text/plain")).run()
    detected = " ".join(texts(at.success))
    assert "gb18030" in detected.lower() and "2 chapters" in detected and "第一回" in detected
    at.button[0].click().run()  # Add to 林黛玉 and rebuild
    assert_clean(at)
    assert not at.error, texts(at.error)
    # Her bundled notes plus the upload.
    assert any(s.startswith("Rebuilt: 2 books") for s in texts(at.success)), texts(at.success)
    stats = KnowledgeStore.open("daiyu").stats()
    assert stats["files"] == 2 and stats["chunks"] >= 2
    hits = KnowledgeStore.open("daiyu").search("甄士隐梦幻识通灵", k=1)
    assert hits and hits[0].source == "红楼梦选段.txt" and hits[0].chapter.startswith("第一回")


def test_knowledge_page_offers_the_upgrade_to_the_best_index_this_machine_has(daiyu_store: str,
                                                                            no_gemma: Path) -> None:
    from knowledge_base import gemma

    at = start("Knowledge")
    assert_clean(at)
    assert "Upgrade the search index in the background (e5)" in [b.label for b in at.button]
    gemma.model_dir().mkdir(parents=True)
    (gemma.model_dir() / gemma.COMPLETE).write_text("x")  # as if assembled: it becomes the target
    at.run()
    assert "Upgrade the search index in the background (embeddinggemma)" in [b.label for b in at.button]


def test_a_rebuild_on_the_page_starts_the_background_upgrade(app_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                           no_gemma: Path) -> None:
    started: list[list[str]] = []
    monkeypatch.setenv("ZHIYIN_EMBEDDER", "auto")  # no_gemma: the target is e5
    # A stand-in child that only holds the inherited lock a moment: the real upgrade is tested elsewhere.
    monkeypatch.setattr(gen_chroma, "upgrade_argv", lambda cid: started.append([cid]) or
                        [sys.executable, "-c", "import time; time.sleep(1)", "upgrade"])
    at = start("Knowledge")
    at.file_uploader(key="books").set_value(("红楼梦选段.txt", GB_BOOK, "text/plain")).run()
    next(b for b in at.button if b.label.startswith("Add to")).click().run()
    assert_clean(at)
    assert started == [["daiyu"]]
    assert any("A better index (e5) is being built in the background" in i for i in texts(at.info)), texts(at.info)


def test_bad_uploads_are_explained_and_change_nothing(app_env: Path) -> None:
    at = start("Knowledge")
    at.file_uploader(key="books").set_value([
        ("cover.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "text/plain"),
        ("empty.txt", b"", "text/plain"),
    ]).run()
    assert_clean(at)
    shown = " ".join(texts(at.error))
    assert "binary" in shown and "empty" in shown
    at.button[0].click().run()
    assert_clean(at)
    assert any("None of the uploaded files could be read" in e for e in texts(at.error))
    assert not KnowledgeStore.exists("daiyu")


def test_settings_page_applies_to_this_session(app_env: Path) -> None:
    at = start("Settings")
    assert_clean(at)
    at.slider(key="set_temperature").set_value(0.2)
    at.selectbox(key="set_engine").set_value("espeak")
    at.button[0].click().run()  # Apply
    assert_clean(at)
    assert at.session_state["overrides"]["temperature"] == pytest.approx(0.2)
    assert at.session_state["overrides"]["tts_engine"] == "espeak"
    assert any("Settings applied" in s for s in texts(at.success))


def test_settings_page_trains_her_voice_only_on_a_gpu_and_switches_her_adapter_on(app_env: Path) -> None:
    from finetune import job
    from finetune.train import TrainConfig, train

    at = start("Settings")
    assert_clean(at)
    assert any("no adapter yet" in m for m in texts(at.markdown))
    gpu, why = job.can_train()
    assert at.button(key="adapter_train").disabled != gpu
    if not gpu:
        assert any("needs a CUDA GPU" in c for c in texts(at.caption))
    lines = app_env.parent / "lines.jsonl"
    lines.write_text("\n".join(
        '{"conversation": [{"system": "你是林黛玉。", "input": "你好%d？", "output": "我是林黛玉%d。"}]}' % (i, i)
        for i in range(6)), encoding="utf-8")
    train("daiyu", lines, base=str(app_env), config=TrainConfig(steps=2), progress=False)
    at = start("Settings")
    assert any("is ready" in m for m in texts(at.markdown))
    at.toggle(key="adapter_use").set_value(True).run()
    assert_clean(at)
    assert {k: at.session_state["overrides"][k] for k in ("llm_backend", "llm_model", "llm_adapter")} == \
        {"llm_backend": "transformers", "llm_model": "", "llm_adapter": "daiyu"}
    at.sidebar.radio(key="page").set_value("Chat").run()
    assert_clean(at)
    assert any("fine-tuned adapter 'daiyu'" in c for c in texts(at.caption))


# --------------------------------------------------------------------------- ui helpers
def test_inspect_upload_detects_encoding_chapters_and_refuses_bad_files() -> None:
    info = knowledge.inspect_upload("book.txt", GB_BOOK)
    assert info.ok and info.encoding.lower() == "gb18030" and len(info.chapters) == 2
    assert "KB" in info.summary() or "bytes" in info.summary()
    assert "empty" in knowledge.inspect_upload("e.txt", b"").error
    assert "binary" in knowledge.inspect_upload("b.txt", b"\x00\x01\x02" * 1000).error
    assert "unsupported file type" in knowledge.inspect_upload("a.pdf", b"%PDF-1.4").error


def test_create_character_with_portrait_and_bad_names(app_env: Path) -> None:
    portrait = (REPO / "avatars" / "elizabeth.png").read_bytes()
    card, report, infos = knowledge.create_character("薛宝钗", [("宝钗.txt", GB_BOOK)], portrait=("me.png", portrait),
                                                     description="蘅芜苑的主人")
    assert card.id == "薛宝钗" and report.chunks >= 1 and all(i.ok for i in infos)
    assert load_card("薛宝钗").avatar == "portrait.png"
    assert avatar_path(load_card("薛宝钗")).read_bytes() == portrait
    assert KnowledgeStore.exists("薛宝钗")

    with pytest.raises(CharacterError, match="may not contain '/'"):
        knowledge.create_character("a/../b", [("x.txt", GB_BOOK)])
    with pytest.raises(CharacterError, match="already exists"):
        knowledge.create_character("薛宝钗", [("x.txt", GB_BOOK)])
    with pytest.raises(CharacterError, match="not a PNG"):
        knowledge.create_character("Jane", [("x.txt", GB_BOOK)], portrait=("me.gif", b"GIF89a"))
    with pytest.raises(ReadError, match="None of the uploaded files"):
        knowledge.create_character("Jane", [("x.txt", b"")])
    with pytest.raises(CharacterError, match="could not be read as an image"):
        knowledge.create_character("Jane", [("x.txt", GB_BOOK)], portrait=("me.png", b"not a png"))
    assert not KnowledgeStore.exists("Jane")


def test_highlight_marks_matches_and_escapes_markdown() -> None:
    md = chat.highlight("Lizzy *walked* to [Netherfield]: $5", ["walk"])
    assert ":orange-background[**walk**]ed" in md
    assert "\\*" in md and "\\[Netherfield\\]" in md and "\\$5" in md
    assert chat.highlight("宝玉和黛玉", []) == "宝玉和黛玉"
    assert chat.highlight("Walk", ["walk"]) == ":orange-background[**Walk**]"


def test_second_tab_waits_with_a_spinner_until_the_first_answer_is_done() -> None:
    lock = threading.Lock()
    events: list[str] = []
    released = threading.Event()

    @contextmanager
    def spinner():
        events.append("spinner")
        yield

    def first() -> None:
        with chat.one_at_a_time(lock, spinner):
            events.append("first generating")
            released.wait(5)
            events.append("first done")

    t = threading.Thread(target=first)
    t.start()
    while "first generating" not in events:
        time.sleep(0.01)
    def second_tab() -> None:
        with chat.one_at_a_time(lock, spinner):
            events.append("second generating")

    second = threading.Thread(target=second_tab)
    second.start()
    while "spinner" not in events:
        time.sleep(0.01)
    assert "second generating" not in events  # it waits behind the first
    released.set()
    t.join(5)
    second.join(5)
    assert events == ["first generating", "spinner", "first done", "second generating"]


def test_unexpected_errors_are_a_sentence_with_the_trace_on_stderr(capsys: pytest.CaptureFixture) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        text = errors.message(exc, "answering")
    assert text.startswith("Something went wrong while answering (ZeroDivisionError)")
    assert "Traceback" in capsys.readouterr().err
    assert errors.message(ReadError("x.txt is empty; nothing to add."), "reading") == "x.txt is empty; nothing to add."


def test_searching_text_names_the_model_and_the_second_look() -> None:
    assert knowledge.searching_text({"embedder": "use", "searching": ["use", "bm25"]}) == \
        "Searching with USE (the fast first index)"
    assert knowledge.searching_text({"embedder": "embeddinggemma", "searching": ["embeddinggemma", "windows"]}) == \
        "Searching with EmbeddingGemma and a second look"


def test_progress_text_and_upgrade_text() -> None:
    assert knowledge.progress_text("embed", 5, 10) == (0.5, "Embedding: 5/10")
    assert knowledge.progress_text("read", 0, 0)[0] == 0.0
    assert "No background upgrade" in knowledge.upgrade_text({})
    line = knowledge.upgrade_text({"target": "e5", "stage": "embed", "done": 5, "total": 10, "eta_s": 12})
    assert "e5" in line and "5/10" in line and "12 s left" in line


# ------------------------------------------------------------------------------ start.py
def test_start_prepare_only_builds_the_built_in_stores(app_env: Path, capsys: pytest.CaptureFixture) -> None:
    import start

    assert start.main(["--prepare-only"]) == 0
    assert KnowledgeStore.exists("daiyu") and KnowledgeStore.exists("elizabeth")
    assert "nothing to assemble" in capsys.readouterr().err
    assert start.main(["--prepare-only"]) == 0  # the second time there is nothing to do


def test_start_knows_when_the_packaged_model_is_needed() -> None:
    import start
    from settings import Settings

    assert start.needs_packaged_model(Settings()) == "1.5b"
    assert start.needs_packaged_model(Settings(llm_model="qwen2.5-0.5b")) == "0.5b"
    assert start.needs_packaged_model(Settings(llm_model="0.5b")) == "0.5b"
    assert start.needs_packaged_model(Settings(llm_model="/x/y.gguf")) is None
    assert start.needs_packaged_model(Settings(llm_backend="openai")) is None
    cmd = start.streamlit_command("127.0.0.1", 7860, True)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and "--server.headless" in cmd and "7860" in cmd


def test_bad_settings_file_is_reported(app_env: Path, zhiyin_home: Path) -> None:
    (zhiyin_home / "settings.toml").write_text("colour = 'red'\n", encoding="utf-8")
    at = start()
    assert_clean(at)
    assert any("Unknown setting" in e for e in texts(at.error))



@pytest.mark.slow
def test_video_toggle_shows_a_talking_head_clip_per_sentence(daiyu_store: str) -> None:
    at = start()
    at.toggle(key="video").set_value(True).run()
    at.chat_input[0].set_value("宝玉是谁？").run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    msg = at.session_state["conv"].messages[-1]
    assert msg.video and len(msg.video) == len(msg.audio)
    assert all(clip[4:8] == b"ftyp" for clip in msg.video)  # MP4
    assert at.get("video")


def test_a_50_mb_upload_is_read_not_refused(corpus: Path) -> None:
    raw = (corpus / "hongloumeng.txt").read_bytes()
    data = raw * round(50 * 2**20 / len(raw))  # whole copies: ~50 MB of GB18030
    info = knowledge.inspect_upload("big.txt", data)
    assert info.ok, info.error
    assert info.encoding.lower() == "gb18030" and info.size > 45 * 2**20 and len(info.chapters) > 1000
    assert "MB" in info.summary()
    limit = (REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8")
    assert "maxUploadSize = 200" in limit
