"""The knowledge base: bad input, the store contract, incremental builds, the background upgrade and
the gen_chroma CLI. Real Chroma on disk, the real packaged USE embedder (reading and chunking:
test_kb_reading.py; the shared books: kb_books.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import gen_chroma
from characters import CharacterError
from knowledge_base import builder
from knowledge_base.builder import build, upgrade, upgrade_status
from knowledge_base.store import (
    NEIGHBOUR_WEIGHT,
    Hit,
    KnowledgeStore,
    StoreError,
    chroma_client,
    current_version,
    read_chunks,
    read_manifest,
    store_root,
)
from settings import paths
from tests.kb_books import EN_TEXT, ZH_CHAPTERS, ZH_TEXT, book, run_cli, texts_folder, write


@pytest.fixture
def zh_book(tmp_path: Path) -> Path:
    return write(tmp_path / "in" / "hong.txt", ZH_TEXT)


@pytest.fixture
def en_book(tmp_path: Path) -> Path:
    return write(tmp_path / "in" / "pride.txt", EN_TEXT)


@pytest.fixture
def zh_store(zh_book: Path) -> str:
    """A character 'lin' built from the Chinese book with USE."""
    build("lin", [zh_book], name="林黛玉", embedder="use")
    return "lin"


# ---- bad input ----------------------------------------------------------------------------------
def test_binary_and_empty_files_are_skipped_and_the_rest_is_built(tmp_path, zh_book):
    binary = tmp_path / "in" / "cover.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 200)
    empty = write(tmp_path / "in" / "empty.txt", "")
    report = build("lin", [binary, zh_book, empty], embedder="use")
    reasons = {Path(s["file"]).name: s["reason"] for s in report.skipped}
    assert set(reasons) == {"cover.txt", "empty.txt"}
    assert "binary" in reasons["cover.txt"] and "empty" in reasons["empty.txt"]
    assert sorted(p.name for p in texts_folder("lin").iterdir()) == ["hong.txt"]  # nothing bad was copied
    hits = KnowledgeStore.open("lin").search("梅花上的雪", k=1)
    assert hits and "梅花上的雪" in hits[0].text


def test_cli_only_bad_files_exits_2_with_a_message_and_no_traceback(tmp_path, capsys):
    empty = write(tmp_path / "empty.txt", "")
    rc = gen_chroma.main(["build", "nobody", str(empty), "--no-upgrade", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "gen_chroma.py build nobody" in err and "Traceback" not in err
    assert "empty.txt is empty" in err  # the reason the given file was skipped
    assert not KnowledgeStore.exists("nobody")


def test_cli_refuses_a_path_like_character_id(tmp_path, zh_book):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli("build", "../x", str(zh_book), "--no-upgrade", "--quiet")
    assert proc.returncode == 2
    assert "not a valid character id" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside ZHIYIN_HOME
    assert not (paths().home.parent / "x").exists()
    for bad in ("../x", "a/b", "..", "/etc"):
        with pytest.raises(CharacterError):
            build(bad, [zh_book], embedder="use")
        with pytest.raises(CharacterError):
            KnowledgeStore.open(bad)


def test_character_id_with_spaces_is_made_safe(zh_book):
    report = build("Lin Dai Yu", [zh_book], embedder="use")
    assert report.character == "Lin-Dai-Yu"
    assert (paths().stores / "Lin-Dai-Yu" / "CURRENT").is_file()
    assert KnowledgeStore.open("Lin Dai Yu").search("人参养荣丸", k=1)


def test_hostile_file_names_stay_inside_the_texts_folder(tmp_path):
    src = write(tmp_path / "in" / "..evil name.txt", EN_TEXT)
    build("eliza", [src], embedder="use")
    names = [p.name for p in texts_folder("eliza").iterdir()]
    assert names == ["evil name.txt"]
    assert builder.safe_filename("../../etc/passwd") == "passwd"
    assert builder.safe_filename("..\\..\\x.txt") == "x.txt"


# ---- the store contract -------------------------------------------------------------------------
def test_manifest_records_embedder_dim_and_collection(zh_store):
    version = current_version(store_root(zh_store))
    m = read_manifest(version)
    assert m["active"] == "use"
    info = m["dense"]["use"]
    assert info["dim"] == 512 and info["complete"] is True
    col = chroma_client(version / "chroma").get_collection(info["collection"])
    assert col.count() == m["chunks"] == len(read_chunks(version))
    assert col.metadata["embedder"] == "use" and col.metadata["dim"] == 512
    assert m["files"]["hong.txt"]["chapters"] == 3 and m["files"]["hong.txt"]["encoding"] == "utf-8"


def test_opening_with_another_embedder_is_refused(zh_store, capsys):
    with pytest.raises(StoreError, match=r"built with 'use' \(512-d\), not 'e5'.*--rebuild"):
        KnowledgeStore.open(zh_store, embedder="e5")
    assert gen_chroma.main(["search", zh_store, "茶", "--embedder", "e5"]) == 2
    assert "not 'e5'" in capsys.readouterr().err


def _forget_open_stores() -> None:
    KnowledgeStore._cache.clear()  # the process-wide cache would hand back the healthy store


def test_deleted_collection_is_an_error_not_zero_hits(zh_store):
    version = current_version(store_root(zh_store))
    name = read_manifest(version)["dense"]["use"]["collection"]
    chroma_client(version / "chroma").delete_collection(name)
    _forget_open_stores()
    with pytest.raises(StoreError, match="no collection"):
        KnowledgeStore.open(zh_store)


def test_empty_collection_is_an_error_not_zero_hits(zh_store):
    version = current_version(store_root(zh_store))
    col = chroma_client(version / "chroma").get_collection(read_manifest(version)["dense"]["use"]["collection"])
    col.delete(ids=col.get(include=[])["ids"])
    _forget_open_stores()
    with pytest.raises(StoreError, match="empty"):
        KnowledgeStore.open(zh_store)


def test_store_opened_under_another_collection_name_is_an_error(zh_store):
    # The peer project's bug: a wrong collection name silently reads an empty collection.
    version = current_version(store_root(zh_store))
    m = read_manifest(version)
    m["dense"]["use"]["collection"] = "zy-some-other-name"
    (version / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    _forget_open_stores()
    with pytest.raises(StoreError, match="no collection 'zy-some-other-name'"):
        KnowledgeStore.open(zh_store)
    client = chroma_client(version / "chroma")
    assert "zy-some-other-name" not in [c.name for c in client.list_collections()]  # nothing was created


def test_missing_store_is_an_error_naming_the_build_command():
    with pytest.raises(StoreError, match="gen_chroma.py build ghost"):
        KnowledgeStore.open("ghost")


def test_search_returns_hits_with_chapter_and_source(zh_store):
    store = KnowledgeStore.open(zh_store)
    hits = store.search("妙玉泡茶用的是什么水？", k=3)
    assert 1 <= len(hits) <= 3
    top = hits[0]
    assert "梅花上的雪" in top.text
    assert top.chapter == "第二回 贾宝玉品茶栊翠庵" and top.source == "hong.txt"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.search("   ") == []
    around = store.neighbours(top)
    assert top.text in around and len(around) >= len(top.text)



@pytest.mark.parametrize("lang", ["zh", "en"])
def test_neighbours_do_not_repeat_the_overlap_chunks_carry_over(tmp_path, lang):
    sentence = "黛玉葬花第{}日，她一边走一边吟诗，紫鹃跟在后面。" if lang == "zh" else "Elizabeth walked to Meryton on day {} with Jane. "
    body = "".join(sentence.format(i) for i in range(60))
    title = "第一回 长篇" if lang == "zh" else "Chapter 1"
    build("long", [write(tmp_path / "in" / "long.txt", f"{title}\n\n{body}\n")], embedder="use", lang=lang)
    store = KnowledgeStore.open("long")
    assert len(store.chunks) >= 3
    mid = store.chunks[1]
    joined = store.neighbours(Hit(mid["text"], mid["source"], mid["chapter"], 1.0, mid["id"]))
    squash = (lambda t: "".join(t.split())) if lang == "zh" else (lambda t: " ".join(t.split()))
    # Exactly the book's text from the first to the third chunk: the carried-over overlap appears once.
    assert squash(joined) in squash(f"{title} {body}") and squash(store.chunks[2]["text"]) in squash(joined)


def test_a_passage_beside_a_strong_match_shares_its_score_within_its_source(zh_book, en_book):
    build("two", [zh_book, en_book], embedder="use")
    store = KnowledgeStore.open("two")
    src = [c["source"] for c in store.chunks]
    row = next(r for r in range(1, len(src) - 1) if src[r - 1] == src[r] == src[r + 1])
    out = store._with_neighbours({row: 1.0})
    assert out[row] == 1.0 and out[row - 1] == out[row + 1] == pytest.approx(NEIGHBOUR_WEIGHT)
    edge = next(r for r in range(1, len(src)) if src[r - 1] != src[r])
    assert edge - 1 not in store._with_neighbours({edge: 1.0})  # never across two files


def test_idf_ranks_a_rare_word_above_a_common_one(zh_store):
    store = KnowledgeStore.open(zh_store)
    common, rare, absent = store.idf("黛玉"), store.idf("梅花上的雪"), store.idf("不在书里的词")
    assert absent > rare > common > 0


def test_english_search_finds_the_right_chapter(en_book):
    build("eliza", [en_book], embedder="use")
    hits = KnowledgeStore.open("eliza").search("What did Darcy say when he would not dance with Elizabeth?", k=2)
    assert hits[0].chapter == "Chapter 3" and "not handsome enough" in hits[0].text


def test_cli_search_json_schema(zh_store, capsys):
    capsys.readouterr()
    assert gen_chroma.main(["search", zh_store, "人参养荣丸", "潇湘馆", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in out] == ["人参养荣丸", "潇湘馆"]
    for r in out:
        assert set(r) == {"query", "hits"}
        assert 1 <= len(r["hits"]) <= 2
        for h in r["hits"]:
            assert {"text", "source", "chapter", "score"} <= set(h)
            assert isinstance(h["text"], str) and isinstance(h["score"], float)
            assert h["source"] == "hong.txt" and h["chapter"] in ZH_CHAPTERS
    assert "人参养荣丸" in out[0]["hits"][0]["text"]


def test_cli_build_json_summary(en_book, capsys):
    assert gen_chroma.main(["build", "eliza", str(en_book), "--json", "--no-upgrade", "--quiet",
                            "--embedder", "use", "--name", "Elizabeth Bennet", "--lang", "en"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert set(report) == set(builder.BuildReport(character="x").to_dict())
    assert report["character"] == "eliza" and report["added"] == ["pride.txt"]
    assert report["chunks"] == report["embedded"] > 0 and report["embedder"] == "use"
    assert report["up_to_date"] is False
    assert gen_chroma.main(["status", "eliza", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["store"]["chunks"] == report["chunks"] and status["store"]["embedder"] == "use"


# ---- incremental builds -------------------------------------------------------------------------
def test_unchanged_rebuild_is_up_to_date_and_embeds_nothing(zh_store, zh_book):
    before = current_version(store_root(zh_store))
    report = build(zh_store, [zh_book], embedder="use")
    assert report.up_to_date and report.embedded == 0
    assert report.unchanged == ["hong.txt"] and not (report.added or report.changed or report.removed)
    assert current_version(store_root(zh_store)) == before


def test_changing_one_file_re_embeds_only_its_chunks(tmp_path, zh_book, en_book):
    first = build("mix", [zh_book, en_book], embedder="use")
    en_chunks = read_manifest(current_version(store_root("mix")))["files"]["pride.txt"]["chunks"]
    changed = EN_TEXT.replace("Kitty coughed all the time", "Lydia laughed at the militia officers")
    write(en_book, changed)
    report = build("mix", [en_book], embedder="use", replace=True)  # without replace: saved as "pride (2).txt"
    assert report.changed == ["pride.txt"] and report.unchanged == ["hong.txt"]
    assert 0 < report.embedded <= en_chunks < first.chunks
    store = KnowledgeStore.open("mix")
    texts = " ".join(c["text"] for c in store.chunks)
    assert "Lydia laughed" in texts and "Kitty coughed" not in texts
    assert store._collection.count() == len(store.chunks) == report.chunks
    assert "Lydia laughed" in store.search("Lydia laughed at the officers", k=1)[0].text


def test_removing_a_file_removes_its_passages(zh_book, en_book):
    build("mix", [zh_book, en_book], embedder="use")
    (texts_folder("mix") / "pride.txt").unlink()
    report = build("mix", embedder="use")
    assert report.removed == ["pride.txt"] and report.embedded == 0
    store = KnowledgeStore.open("mix")
    assert {c["source"] for c in store.chunks} == {"hong.txt"}
    assert store._collection.count() == len(store.chunks)
    for hit in store.search("Netherfield Park is let at last", k=5):
        assert hit.source == "hong.txt"


def test_current_swaps_and_keeps_the_previous_version_until_the_next_build(tmp_path, zh_book, en_book, monkeypatch):
    from knowledge_base import versions

    monkeypatch.setattr(versions, "RETIRED_GRACE_S", 0)  # no grace for searches under way (tested in test_ragchat)
    root = store_root(build("mix", [zh_book], embedder="use").character)
    v1 = current_version(root)
    build("mix", [en_book], embedder="use")
    v2 = current_version(root)
    assert v2 != v1 and (root / "CURRENT").read_text().strip() == v2.name
    assert v1.is_dir()  # the previous version stays whole until the next build
    old = KnowledgeStore("mix", v1)
    assert {h.source for h in old.search("Netherfield", k=5)} == {"hong.txt"}
    write(texts_folder("mix") / "more.txt", "第四回 新章\n\n宝玉又到潇湘馆来看黛玉。\n")
    build("mix", embedder="use")
    v3 = current_version(root)
    assert not v1.exists() and v2.is_dir() and v3 != v2
    assert sorted(p.name for p in root.glob("v-*")) == sorted([v2.name, v3.name])
    assert not list(root.glob("CURRENT.*"))  # no temp marker left behind


def test_rebuild_flag_re_embeds_everything_with_cached_vectors(zh_store, zh_book):
    n = read_manifest(current_version(store_root(zh_store)))["chunks"]
    report = build(zh_store, rebuild=True, embedder="use")
    assert not report.up_to_date and report.embedded == report.chunks == n


# ---- background upgrade -------------------------------------------------------------------------
def test_upgrade_swaps_the_active_index_to_e5_and_search_still_works(tmp_path, no_gemma):
    small = write(tmp_path / "in" / "tiny.txt", book({t: ps[:2] for t, ps in list(ZH_CHAPTERS.items())[:2]}))
    report = build("tiny", [small], embedder="auto")
    assert report.upgrade_pending and report.embedder == "use"
    stages: list[str] = []
    assert upgrade("tiny", progress=lambda s, d, t: stages.append(s)) is True
    assert {"embed", "done"} <= set(stages)
    m = read_manifest(current_version(store_root("tiny")))
    assert m["active"] == "e5" and m["dense"]["e5"] == {**m["dense"]["e5"], "dim": 384, "complete": True}
    assert m["dense"]["use"]["complete"] is True
    store = KnowledgeStore.open("tiny")
    assert store.embedder_name == "e5" and store.dim == 384
    assert store.stats()["searching"] == ["e5", "use", "bm25"]  # USE stays on as a second opinion
    assert "梅花上的雪" in store.search("妙玉泡茶用的什么水", k=1)[0].text
    assert upgrade_status("tiny")["stage"] == "done"
    assert not build("tiny", [small]).upgrade_pending  # up to date, already upgraded
    # A new book after the upgrade: searchable at once with USE; e5 is stale until the next upgrade.
    more = write(tmp_path / "in" / "more.txt", "第九回 新书\n\n香菱学诗，黛玉教她先读王维的五言律。\n")
    after = build("tiny", [more])
    assert after.upgrade_pending and after.embedder == "use"
    store = KnowledgeStore.open("tiny")
    assert store.embedder_name == "use" and store.stats()["searching"] == ["use", "bm25"]  # stale e5 is not read
    assert "香菱学诗" in store.search("香菱学诗", k=1)[0].text


def test_the_upgrade_targets_embeddinggemma_once_assembled_and_e5_before(no_gemma):
    from knowledge_base import gemma
    from knowledge_base.upgrade import upgrade_target

    assert upgrade_target() == "e5"
    folder = gemma.model_dir()
    folder.mkdir(parents=True)
    (folder / gemma.COMPLETE).write_text("x")  # what prepare writes last
    assert upgrade_target() == "embeddinggemma"


@pytest.mark.slow
def test_a_new_book_is_upgraded_to_embeddinggemma_and_searched_by_it(tmp_path):
    from knowledge_base import gemma

    if not gemma.is_ready():
        pytest.skip(f"EmbeddingGemma is not assembled in {gemma.model_dir()}: run `{gemma.PREPARE}`")
    small = write(tmp_path / "in" / "tiny.txt", book({t: ps[:2] for t, ps in list(ZH_CHAPTERS.items())[:2]}))
    report = build("tiny", [small], embedder="auto")
    assert report.upgrade_pending and report.embedder == "use"
    assert upgrade("tiny") is True
    m = read_manifest(current_version(store_root("tiny")))
    assert m["active"] == "embeddinggemma" and m["dense"]["embeddinggemma"]["dim"] == 768
    store = KnowledgeStore.open("tiny")
    assert store.stats()["searching"] == ["embeddinggemma", "windows"]
    assert "梅花上的雪" in store.search("妙玉给黛玉她们泡茶，用的是哪里来的水？", k=1)[0].text
    assert upgrade_status("tiny")["target"] == "embeddinggemma"
    assert not build("tiny", [small]).upgrade_pending  # already on the best index


def test_embeddinggemma_assembled_by_the_install_is_found_after_zhiyin_home_moves(tmp_path, monkeypatch):
    from knowledge_base import gemma

    repo_copy = tmp_path / "repo" / "checkpoints" / gemma.FOLDER
    repo_copy.mkdir(parents=True)
    (repo_copy / gemma.COMPLETE).write_text("x")
    monkeypatch.setenv("ZHIYIN_MODELS", str(tmp_path / "elsewhere"))  # a models dir without it
    monkeypatch.setattr(gemma, "fallback_dirs", lambda: [repo_copy])  # settings.BUNDLED's, in the repo
    assert gemma.is_ready() and gemma.require() == repo_copy and gemma.prepare(onnx=False) == repo_copy


def test_the_keyword_index_does_not_import_jax_and_jax_still_imports_afterwards():
    # bm25s imports jax (installed with mediapipe) for a top-k the store never uses: ~0.9 s and ~140 MB a process.
    import subprocess
    import sys

    code = ("import sys, knowledge_base.keywords as k; assert 'jax' not in sys.modules, 'jax imported'; "
            "import bm25s.selection as s; assert not s.JAX_IS_AVAILABLE; import jax; print('ok', jax.numpy.zeros(1).shape)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok (1,)"
