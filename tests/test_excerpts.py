"""Excerpts: the sentences of the retrieved passages that answer a question, within budget.
Real packaged USE embedder; passages written for these tests."""
from __future__ import annotations

from knowledge_base.excerpts import select
from knowledge_base.store import Hit
from ragchat import count_tokens
from sentences import split_sentences


def hit(text: str, n: int = 0) -> Hit:
    return Hit(text=text, source="book.txt", chapter=f"第{n + 1}回", score=1.0, chunk_id=f"c{n}", index=n)


def flat_idf(word: str) -> float:
    return 1.0


ZH_PASSAGE = (
    "却说宝玉自那日见了秦钟的人品出众，心中似有所失，痴了半日。"
    "黛玉因问宝玉往那里去了，宝玉笑道：“我往薛姐姐那里去了。”"
    "一时众人散去，园中只剩得几个丫头扫地，风吹得落花满地。"
    "宝钗因说起自己从胎里带来的一股热毒，吃的是一种药丸，叫作冷香丸，是个和尚给的海上方。"
    "说着，莺儿端了茶来，二人吃茶，又说了些闲话。"
)


def test_the_sentence_that_answers_is_chosen_even_when_it_is_far_from_the_first_match() -> None:
    # Trimming around the first matching word (宝玉, at the start) would keep the wrong end of this passage.
    out = select("宝钗吃的那种药丸叫什么名字？", [hit(ZH_PASSAGE)], budget=45, per_passage=45,
                 count=count_tokens, idf=flat_idf, lang="zh")
    assert len(out) == 1
    assert "冷香丸" in out[0].text
    assert count_tokens(out[0].text) <= 45
    # What was left out before it is marked.
    assert out[0].text.startswith("…")


def test_budgets_hold_and_excerpts_come_in_the_hits_order() -> None:
    hits = [hit(ZH_PASSAGE, n) for n in range(4)]
    hits[2] = hit("宝钗笑道：“这冷香丸原是癞头和尚说下的方子，要春天开的白牡丹花蕊十二两。”" * 3, 2)
    out = select("冷香丸是谁给的方子？", hits, budget=120, per_passage=50, count=count_tokens, idf=flat_idf, lang="zh")
    assert out
    assert sum(count_tokens(e.text) for e in out) <= 120
    assert all(count_tokens(e.text) <= 50 for e in out)
    ranks = [int(e.hit.chunk_id[1:]) for e in out]
    assert ranks == sorted(ranks)
    assert any("冷香丸" in e.text for e in out)


def test_rare_question_words_outweigh_common_ones() -> None:
    # Both sentences hold one question word; the one holding the rare word (冷香丸) must win.
    idf = {"宝玉": 0.1, "冷香丸": 5.0}.get
    passage = "宝玉那日在园中闲逛，见了许多花草。这冷香丸须用雨水节令的雨水十二钱。"
    out = select("宝玉问冷香丸怎么配", [hit(passage)], budget=25, per_passage=25, count=count_tokens,
                 idf=lambda w: idf(w, 1.0), lang="zh")
    assert "冷香丸" in out[0].text and "宝玉那日" not in out[0].text


def test_a_lone_over_long_sentence_is_cut_to_fit() -> None:
    long_sentence = "黛玉" + "，".join(["独自坐在窗下看那竹影参差"] * 20) + "。"
    out = select("黛玉坐在哪里", [hit(long_sentence)], budget=30, per_passage=30, count=count_tokens,
                 idf=flat_idf, lang="zh")
    assert out and count_tokens(out[0].text) <= 30 and out[0].text.endswith("…")


def test_english_excerpts_keep_whole_sentences() -> None:
    text = ("Mr. Bennet was among the earliest of those who waited on Mr. Bingley. He had always intended "
            "to visit him. The weather was fine and the lanes were muddy. Mrs. Bennet said that Netherfield "
            "Park was let at last, to a young man of large fortune from the north of England.")
    out = select("Who took Netherfield Park?", [hit(text)], budget=40, per_passage=40, count=count_tokens,
                 idf=flat_idf, lang="en")
    assert "Netherfield Park was let at last" in out[0].text
    assert "Mr. Bingley" not in out[0].text or "Mr. Bennet was among" in out[0].text  # never split at "Mr."
    assert split_sentences(text)[0].endswith("Mr. Bingley.")


def test_no_hits_no_excerpts() -> None:
    assert select("anything", [], 100, 100, count_tokens, flat_idf, "en") == []


def test_where_the_store_scored_the_windows_they_choose_the_sentences(monkeypatch) -> None:
    # Hit.windows: the store's index (EmbeddingGemma) scored each two-sentence window for the question.
    # The sentences of the best window are kept, the others left out, and no sentence is embedded again.
    import knowledge_base.excerpts as excerpts_module
    from knowledge_base.windows import window_spans

    def no_embedding(name):
        raise AssertionError("excerpts embedded sentences although the hit carried window scores")

    monkeypatch.setattr(excerpts_module, "get_embedder", no_embedding)
    passage = ("那日天气晴好，众人在园子里赏花饮酒，说笑了半日。袭人只低头做针线，一声也不言语。"
               "妙玉笑道：这是五年前收的梅花上的雪，埋在地下。众人听了都赞叹不已，各自散去。")
    h = hit(passage)
    spans = window_spans(passage)
    assert len(spans) == 3
    h.windows = [(s, e, x) for (s, e), x in zip(spans, (0.2, 0.3, 0.8), strict=True)]
    out = select("泡茶用的是什么水", [h], budget=40, per_passage=40, count=count_tokens, idf=flat_idf, lang="zh")
    assert "梅花上的雪" in out[0].text and "赏花饮酒" not in out[0].text
    # Scored the other way round, the other end of the passage is kept.
    h.windows = [(s, e, x) for (s, e), x in zip(spans, (0.8, 0.3, 0.2), strict=True)]
    out = select("泡茶用的是什么水", [h], budget=40, per_passage=40, count=count_tokens, idf=flat_idf, lang="zh")
    assert "赏花饮酒" in out[0].text and "梅花上的雪" not in out[0].text
    # The scores are the search's working data: a reader's sources (and a saved conversation) leave them out.
    assert "windows" not in h.for_sources() and h.for_sources()["text"] == passage


def test_with_window_scores_a_lower_passage_needs_a_clearly_closer_sentence() -> None:
    # excerpts.RANK_PRIOR: a sentence carries its passage's rank; the fifth passage's sentence wins only by a margin.
    import knowledge_base.excerpts as excerpts_module
    from knowledge_base.windows import window_spans

    texts = [f"第{n}段闲话，众人说笑了半日。又有一件小事，不必细说。" for n in range(5)]
    hits = [hit(t, n) for n, t in enumerate(texts)]
    for n, h in enumerate(hits):
        h.windows = [(s, e, 0.5 if n == 0 else 0.6) for s, e in window_spans(h.text)]
    out = select("什么事", hits, budget=16, per_passage=40, count=count_tokens, idf=flat_idf, lang="zh")
    assert [e.hit.index for e in out] == [0]  # 0.1 closer is not enough to pass the top passage
    for h in hits[1:]:
        h.windows = [(s, e, 0.5 + excerpts_module.RANK_PRIOR) for s, e, _ in h.windows]
    out = select("什么事", hits, budget=16, per_passage=40, count=count_tokens, idf=flat_idf, lang="zh")
    assert out[0].hit.index == 1  # far closer: the lower passage's sentence comes first
