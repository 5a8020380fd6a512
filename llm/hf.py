"""The transformers backend: a local Hugging Face folder or GGUF (dequantised), plus an optional
PEFT LoRA adapter by path or character id; 4-bit only with CUDA and bitsandbytes."""
from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

import settings as settings_mod
from llm import adapters, resident
from llm.common import CHATML, ModelMissing, Repetition, merge_stop, openai_messages, word_forms
from llm.packaged import DEFAULT_MODEL, PACKAGED, SIZES, resolve_gguf


@dataclass(frozen=True)
class HFSource:
    """Where a transformers model comes from: a folder (+ optional GGUF inside it) and adapter."""

    model_dir: Path
    gguf_file: str | None = None
    adapter_dir: Path | None = None


def resolve_adapter(adapter: str) -> Path | None:
    """``settings.llm_adapter`` (a folder or a character id) -> the live adapter folder, or None."""
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
        found = adapters.live(folder)
        if found is not None:
            return found
    raise ModelMissing(
        f"No LoRA adapter '{adapter}' (looked for adapter_config.json or a LIVE version in "
        f"{', '.join(str(c) for c in candidates)}). Train one with: python -m finetune train {adapter}"
    )


def adapter_base(adapter_dir: Path) -> str:
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
        model = adapter_base(adapter_dir)
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


def load_hf(source: HFSource, trust_remote_code: bool) -> tuple[Any, Any]:
    """(tokenizer, model), the resident model (llm.resident): 4-bit on CUDA with bitsandbytes, else CPU."""
    import torch

    cuda = torch.cuda.is_available()
    return resident.get(("transformers", source, trust_remote_code, cuda),
                        lambda: _load(source, trust_remote_code, cuda))


def _load(source: HFSource, trust_remote_code: bool, cuda: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    return tokenizer, model


def mark_dequantised(model: Any) -> None:
    """Clear the quantized flags transformers leaves on a model it dequantised from a GGUF:
    peft and save_pretrained refuse a model that still claims to be quantized."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def ngram_cap(start: int, n: int, most: int) -> Any:
    """A logits processor: a token that would make an n-gram of the *generated* tokens occur more than
    ``most`` times is banned. (transformers' own no_repeat_ngram_size and repetition_penalty also count
    the prompt, which for Chinese holds nearly every common character: they would bend every answer.)"""
    import torch
    from transformers import LogitsProcessor

    class NgramCap(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row in range(input_ids.shape[0]):
                gen = input_ids[row, start:].tolist()
                if len(gen) < n - 1:
                    continue
                prefix = gen[len(gen) - (n - 1):] if n > 1 else []
                seen: dict[int, int] = {}
                for i in range(len(gen) - n + 1):
                    if gen[i:i + n - 1] == prefix:
                        seen[gen[i + n - 1]] = seen.get(gen[i + n - 1], 0) + 1
                banned = [t for t, c in seen.items() if c >= most]
                if banned:
                    scores[row, banned] = -torch.inf
            return scores

    return NgramCap()


def bad_words(tokenizer: Any, words: list[str] | tuple[str, ...]) -> list[list[int]]:
    """Token sequences spelling ``words`` (each as is, after a space, capitalised) for ``bad_words_ids``."""
    out: list[list[int]] = []
    for word in words:
        for form in word_forms(word):
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if ids and ids not in out:
                out.append(ids)
    return out


class TransformersChat(BaseChatModel):
    """A local Hugging Face causal LM (optionally with a PEFT LoRA adapter), streaming via a thread."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    supports_prefill: ClassVar[bool] = True  # a trailing AI message is continued (continue_final_message)
    supports_steering: ClassVar[bool] = True  # ``repetition`` and ``avoid`` per call (llm.common.steering)
    source: HFSource
    trust_remote_code: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 384
    stop: list[str] | None = None
    seed: int | None = None
    n_threads: int | None = None
    repetition: Repetition | None = None  # the default when a call gives none

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
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        if self.n_threads:
            torch.set_num_threads(self.n_threads)
        tokenizer, model = load_hf(self.source, self.trust_remote_code)
        prefill = isinstance(messages[-1], AIMessage)  # continue the answer's given start
        inputs = tokenizer.apply_chat_template(
            openai_messages(messages), add_generation_prompt=not prefill, continue_final_message=prefill,
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
        stops = merge_stop(self.stop, stop, kwargs.get("stop"))
        seed = kwargs.get("seed", self.seed)
        repetition = kwargs.get("repetition") or self.repetition
        if repetition is not None and repetition.max_ngram_repeats:
            gen["logits_processor"] = [ngram_cap(int(inputs["input_ids"].shape[1]), repetition.ngram,
                                                 repetition.max_ngram_repeats)]
        if kwargs.get("avoid"):
            gen["bad_words_ids"] = bad_words(tokenizer, kwargs["avoid"])
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
                    processors = LogitsProcessorList(gen.pop("logits_processor", []))
                    out = model.generate(**inputs, **gen, streamer=streamer, stopping_criteria=criteria,
                                         logits_processor=processors)
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
