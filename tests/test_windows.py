"""The second look by two-sentence windows (knowledge_base/windows.py): sentence splitting, late pooling
from one forward pass (a tiny BERT folder built in code), the reordering itself, and a real store whose
index ranks alone (a real build with that folder, real Chroma on disk) saving, carrying and using them."""
from __future__ import annotations

import numpy as np
import pytest

from knowledge_base import store as store_module
from knowledge_base import windows
from knowledge_base.builder import build
from knowledge_base.embedders import SentenceTransformerEmbedder, get_embedder
from knowledge_base.store import KnowledgeStore, current_version, store_root
from tests.kb_books import write
from tests.test_embedders import tiny_st_folder


def test_sentences_end_at_chinese_and_western_punctuation_and_short_ones_are_joined():
    zh = "黛玉道：“我吃的是王大夫的药呢。”宝玉听了这话，便不再言语了。是。袭人又端了茶来，说天晚了。"
    spans = [zh[s:e] for s, e in windows.sentence_spans(zh)]
    assert spans == ["黛玉道：“我吃的是王大夫的药呢。”", "宝玉听了这话，便不再言语了。是。", "袭人又端了茶来，说天晚了。"]
    en = "It is a truth universally acknowledged. Yes. That a single man in possession of a fortune must want a wife!"
    assert [en[s:e].strip() for s, e in windows.sentence_spans(en)] == [
        "It is a truth universally acknowledged. Yes.",
        "That a single man in possession of a fortune must want a wife!"]
    mr = "Mr. Darcy danced only with Miss Bingley that evening. Mrs. Bennet was much offended by it all."
    assert [mr[s:e].strip() for s, e in windows.sentence_spans(mr)] == [  # "Mr." ends no sentence
        "Mr. Darcy danced only with Miss Bingley that evening.", "Mrs. Bennet was much offended by it all."]
    assert [zh[s:e] for s, e in windows.window_spans(zh)] == [
        "黛玉道：“我吃的是王大夫的药呢。”宝玉听了这话，便不再言语了。是。", "宝玉听了这话，便不再言语了。是。袭人又端了茶来，说天晚了。"]
    assert windows.window_spans("一句话而已，没有句号") == [(0, 10)]
    assert windows.window_spans("") == []


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory):
    return tiny_st_folder(tmp_path_factory.mktemp("st") / "tiny", {"query": "query: ", "passage": "passage: "})


@pytest.fixture(scope="module")
def tiny(tiny_folder) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(tiny_folder)


def test_one_forward_pass_gives_the_passage_vector_and_one_vector_per_span(tiny):
    assert tiny.pools_spans
    texts = [tiny.passage("elizabeth and darcy at the ball. she was not to dance."),
             tiny.passage("snow water for the tea.")]
    spans = [[(9, 40), (41, 63)], [(9, 32)]]
    vecs, parts = tiny.embed_spans(texts, spans)
    assert np.allclose(vecs, tiny.embed(texts), atol=1e-5)  # exactly what embed gives, padding and all
    assert [p.shape for p in parts] == [(2, 32), (1, 32)]
    assert np.allclose(np.linalg.norm(parts[0], axis=1), 1, atol=1e-5)
    assert float(parts[0][0] @ parts[0][1]) < 0.999  # each span is its own mean, not the passage's
    # A span's vector depends on the passage around it (late pooling): same words, other context.
    alone, alone_parts = tiny.embed_spans([tiny.passage("elizabeth and darcy at the ball.")], [[(9, 40)]])
    assert not np.allclose(alone_parts[0][0], parts[0][0], atol=1e-4)


def test_a_model_pooling_by_cls_cannot_pool_spans(tmp_path):
    from sentence_transformers import SentenceTransformer, models

    folder = tiny_st_folder(tmp_path / "mean", {})
    word = models.Transformer(str(tmp_path / "mean-bert"), max_seq_length=64)
    SentenceTransformer(modules=[word, models.Pooling(32, "cls")], device="cpu").save(str(tmp_path / "cls"))
    assert SentenceTransformerEmbedder(folder).pools_spans
    cls = SentenceTransformerEmbedder(tmp_path / "cls")
    assert not cls.pools_spans
    with pytest.raises(NotImplementedError, match="cannot pool parts"):
        cls.embed_spans(["a"], [[(0, 1)]])


def test_the_second_look_lifts_the_passage_whose_window_answers():
    q = np.array([1.0, 0.0, 0.0], np.float32)
    passages = np.array([[0.8, 0.6, 0], [0.75, 0.66, 0], [0.1, 0.99, 0]], np.float32)
    rows = np.array([0, 1, 1, 2])  # passage 1 holds a window that is exactly the question
    vecs = np.array([[0.8, 0.6, 0], [0.2, 0.98, 0], [1, 0, 0], [0.1, 0.99, 0]], np.float32)
    index = windows.WindowIndex(rows, vecs)
    assert index.second_look(q, passages, [0, 1, 2]) == [1, 0, 2]
    # Scored for several chunks at once, each in its own order; a chunk without windows gets none.
    got = index.scores(q, [2, 7, 1])
    assert [len(g) for g in got] == [1, 0, 2]
    assert np.allclose(np.concatenate(got), [0.1, 0.2, 1.0], atol=1e-6)
    # Only the first DEPTH candidates are looked at again; the rest keep their places.
    deep = list(range(3)) + list(range(3, 3 + windows.DEPTH))
    assert index.second_look(q, np.vstack([passages, np.zeros((windows.DEPTH, 3), np.float32)]), deep)[3:] == deep[3:]


ZH = ("第一回 雪\n\n" + "".join(f"第{n}段说的是别的事情，宝玉和众人在园子里闲话。" for n in range(30))
      + "\n\n第二回 茶\n\n妙玉请黛玉和宝钗吃茶。黛玉问这也是旧年的雨水吗。妙玉冷笑道，这是五年前收的梅花上的雪。"
      + "".join(f"后来第{n}件事又说了许久，众人都散了。" for n in range(30)) + "\n")


def test_a_store_whose_index_ranks_alone_saves_its_windows_carries_them_and_looks_again(tmp_path, monkeypatch,
                                                                                        tiny_folder):
    name = f"st:{tiny_folder}"
    monkeypatch.setattr(store_module, "RANKS_ALONE", {name})
    build("win", [write(tmp_path / "in" / "book.txt", ZH)], lang="zh", embedder=name)
    ids, wins = windows.load_raw(current_version(store_root("win")), name)
    store = KnowledgeStore.open("win")
    assert sorted(ids) == sorted(c["id"] for c in store.chunks)
    by_id = dict(zip(ids, wins, strict=True))
    # One vector per window (those past the tiny model's 64 tokens are cut off with the text).
    assert all(1 <= len(by_id[c["id"]]) <= len(windows.window_spans(c["text"])) for c in store.chunks)
    assert store.stats()["searching"] == [name, "windows"]
    emb = get_embedder(name)
    index = store._dense_indexes[0]
    monkeypatch.setattr(store_module, "KEYWORD_SHARE", 0.1)  # off by default; given a share, the second look keeps it
    for q in ("妙玉 梅花上的雪", "宝玉和众人在园子里"):
        vec = emb.embed([q], query=True)[0]
        rows, base, scale = store._alone(vec, index, *store._keywords.scores(store.tokenize(q)))
        again = store._windows.second_look(vec, index.matrix, rows, base, scale)
        assert [store._row[h.chunk_id] for h in store.search(q, k=5)] == again[:5]
        with monkeypatch.context() as m:  # without BM25's share: its own ranking, looked at again, as before
            m.setattr(store_module, "KEYWORD_SHARE", 0.0)
            plain = store._windows.second_look(vec, index.matrix, index.top(vec, store_module.CANDIDATES))
            assert [store._row[h.chunk_id] for h in store.search(q, k=5)] == plain[:5]
    # Each hit carries the question's score for each of its windows, for the excerpts (excerpts.select).
    vec = emb.embed(["妙玉 梅花上的雪"], query=True)[0]
    for h in store.search("妙玉 梅花上的雪", k=3):
        spans = windows.window_spans(h.text)
        assert h.windows and [(s, e) for s, e, _ in h.windows] == spans[: len(h.windows)]
        index_of = store._windows
        expected = index_of._vectors[index_of._rows == store._row[h.chunk_id]].astype(np.float32) @ vec
        assert np.allclose([x for _, _, x in h.windows], expected, atol=1e-3)
    # And search really goes through it: a second look that reverses the candidates reverses the hits.
    with monkeypatch.context() as m:
        m.setattr(store._windows, "second_look", lambda vec, matrix, rows, *scores: rows[::-1])
        vec = emb.embed(["妙玉 梅花上的雪"], query=True)[0]
        last = store._alone(vec, index, *store._keywords.scores(store.tokenize("妙玉 梅花上的雪")))[0][::-1]
        assert [store._row[h.chunk_id] for h in store.search("妙玉 梅花上的雪", k=5)] == last[:5]
    # Another book: its chunks get windows, the kept chunks' windows are carried into the new version.
    build("win", [write(tmp_path / "in" / "extra.txt", "第一回 别的\n\n" + "又是一段无关的话。" * 40 + "\n")],
          lang="zh", embedder=name)
    store = KnowledgeStore.open("win")
    after = dict(zip(*windows.load_raw(current_version(store_root("win")), name), strict=True))
    assert set(after) == {c["id"] for c in store.chunks} and set(ids) < set(after)
    assert all(np.array_equal(after[i], by_id[i]) for i in ids)
    assert store.stats()["searching"] == [name, "windows"]
