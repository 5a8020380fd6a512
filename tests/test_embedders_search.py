"""Repeatable search: the ranking is exact search over the stored vectors, identical in every process
(Chroma's approximate HNSW query returned a different top 50 for the same question in two processes).
Real Chroma on disk and the real packaged USE embedder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from knowledge_base.builder import build
from knowledge_base.embedders import get_embedder
from knowledge_base.store import KnowledgeStore, chroma_client, current_version, read_manifest, store_root

REPO = Path(__file__).resolve().parent.parent
QUERIES = ["妙玉泡茶用的是什么水？", "黛玉吃什么药", "Who said she was not handsome enough?", "宝玉见过这个妹妹", "茶"]
PARAGRAPHS = [
    "妙玉亲自向风炉上扇滚了水，另泡了一壶茶，用的是五年前收的梅花上的雪。",
    "黛玉自幼体弱多病，从会吃饮食时便吃药，如今每日还吃着人参养荣丸。",
    "宝玉看罢，笑道：“这个妹妹我曾见过的。”贾母笑道：“可又是胡说。”",
    "紫鹃端了一盏龙井茶来，黛玉只吃了一口，便又歪在床上看书。",
    "刘姥姥吃了一口，笑道：“好是好，就是淡些，再熬浓些更好了。”",
    "那潇湘馆里凤尾森森，龙吟细细，一带翠竹掩着粉垣。",
]
RANK = """
import json, sys
from knowledge_base.store import KnowledgeStore
store = KnowledgeStore.open("rep")
out = {q: {"dense": store._dense(q, 50), "hits": [h.chunk_id for h in store.search(q, k=10)]} for q in sys.argv[1:]}
print(json.dumps(out))
"""


def _book(path: Path) -> Path:
    # Sixty chapters of repeated, slightly varied passages: many near-ties, where approximate search wavers.
    chapters = [f"第{i + 1}回\n\n" + "\n".join(f"{p[: 10 + (i * 7 + j) % 20]}{p}" for j, p in enumerate(PARAGRAPHS))
                for i in range(60)]
    path.write_text("\n\n".join(chapters) + "\n", encoding="utf-8")
    return path


def test_two_processes_rank_every_question_identically_and_exactly(tmp_path):
    build("rep", [_book(tmp_path / "book.txt")], lang="zh", embedder="use")
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", RANK, *QUERIES], cwd=REPO, capture_output=True, text=True,
                              env=os.environ.copy(), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]
    # And it is the exact ranking: cosine over the vectors Chroma holds, ties by position.
    store = KnowledgeStore.open("rep")
    version = current_version(store_root("rep"))
    col = chroma_client(version / "chroma").get_collection(read_manifest(version)["dense"]["use"]["collection"])
    got = col.get(include=["embeddings"])
    by_id = dict(zip(got["ids"], np.asarray(got["embeddings"], np.float32), strict=True))
    matrix = np.stack([by_id[c["id"]] for c in store.chunks])
    emb = get_embedder("use")
    for q in QUERIES:
        scores = matrix @ emb.embed([q], query=True)[0]
        assert runs[0][q]["dense"] == np.argsort(-scores, kind="stable")[:50].tolist()
    assert len(runs[0][QUERIES[0]]["hits"]) == 10


def test_an_index_that_ranks_alone_hears_bm25_by_score_not_rank_and_no_neighbours(tmp_path, monkeypatch):
    from knowledge_base import store as store_module

    build("rep", [_book(tmp_path / "book.txt")], lang="zh", embedder="use")
    store = KnowledgeStore.open("rep")
    q = "妙玉泡茶用的是什么水？"
    fused = [h.chunk_id for h in store.search(q, k=10)]
    monkeypatch.setattr(store_module, "RANKS_ALONE", {"use"})  # as if USE were EmbeddingGemma
    monkeypatch.setattr(store_module, "KEYWORD_SHARE", 0.1)  # off by default (measured: no net gain)
    alone = [h.chunk_id for h in store.search(q, k=10)]
    assert alone != fused  # rank fusion with BM25 and the neighbours did move this question's ranking before
    vec = get_embedder("use").embed([q], query=True)[0]
    sims = store._dense_indexes[0].matrix @ vec
    bm25, coverage = store._keywords.scores(store.tokenize(q))
    assert coverage > 0
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    expected = np.argsort(-(z(sims) + store_module.KEYWORD_SHARE * coverage * z(bm25)), kind="stable")[:10]
    assert alone == [store.chunks[r]["id"] for r in expected]
    monkeypatch.setattr(store_module, "KEYWORD_SHARE", 0.0)  # no share: its own ranking alone
    plain = [h.chunk_id for h in store.search(q, k=10)]
    assert plain == [store.chunks[r]["id"] for r in store._dense(q, 10)] and plain != alone  # the share moved it
    assert store.stats()["searching"] == ["use"]
