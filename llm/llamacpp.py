"""The llama.cpp backend: a GGUF run in process by xllamacpp, with the prompt prefix cache on so a
follow-up turn that shares the persona prefix starts fast."""
from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

import cpu
from llm import prompt_state, resident
from llm.common import Repetition, merge_stop, openai_messages, pump, word_forms

_BANNED: dict[tuple[str, str], list[int]] = {}  # (model file, word) -> the token ids that spell it alone
_BANNED_LOCK = threading.Lock()


def banned_tokens(server: Any, model_path: str, words: Iterable[str]) -> list[int]:
    """The token ids to ban so the model cannot write ``words``: each form of a word that the model's
    vocabulary holds as one token (Qwen has 电脑, 人工智能, " Python", " computer" as single tokens).
    A word spelled by several tokens is left to persona/guard.py: banning its pieces would ban common
    characters. Asked once per word from llama.cpp's own tokenizer (its /tokenize endpoint)."""
    ids: list[int] = []
    for word in words:
        key = (model_path, word)
        with _BANNED_LOCK:
            known = _BANNED.get(key)
        if known is None:
            known = []
            for form in word_forms(word):
                req = urllib.request.Request(f"{server.listening_address}/tokenize",
                                             data=json.dumps({"content": form}).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(req, timeout=30) as resp:
                    tokens = json.load(resp).get("tokens", [])
                if len(tokens) == 1:
                    known.append(int(tokens[0]))
            with _BANNED_LOCK:
                _BANNED[key] = known
        ids += [i for i in known if i not in ids]
    return ids


def base_params(model_path: str | Path, n_ctx: int, n_threads: int, repack: bool | None = None) -> Any:
    """llama.cpp's parameters every server of ours shares (the app's, ``api.llama_server``'s, the benches'):
    the model, context, threads for generation and prompts, quiet, no warm-up run, and the weight layout
    ``cpu.llama_repack()`` chooses (repacked weights read prompts slower on AVX2 CPUs: docs/llm.md)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = n_ctx
    params.cache_prompt = True  # a follow-up reuses the conversation's prefix
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = n_threads
    params.verbosity = -1  # llama.cpp logs every slot event to stderr otherwise
    params.warmup = False
    params.no_extra_bufts = not (cpu.llama_repack() if repack is None else repack)
    return params


def llama_server(model_path: str, n_ctx: int, n_threads: int) -> Any:
    """The in-process llama.cpp server for (model, context, threads): the resident model (llm.resident)."""
    key = ("llamacpp", str(Path(model_path).resolve()), n_ctx, n_threads)

    def load() -> Any:
        import xllamacpp

        params = base_params(key[1], n_ctx, n_threads)
        # One slot: the whole conversation reuses it, so its KV cache keeps the
        # persona + passages prefix and a follow-up only evaluates the new tokens.
        params.n_parallel = 1
        # Saved states of the characters' prompt heads (llm/prompt_state.py); the trailing "/" matters.
        params.slot_save_path = str(prompt_state.state_dir()) + "/"
        params.endpoint_slots = True
        return xllamacpp.Server(params)

    return resident.get(key, load)

class LlamaCppChat(BaseChatModel):
    """A GGUF chat model run in process by llama.cpp (xllamacpp), streaming token by token."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # A trailing AI message is continued, not answered (llama.cpp's server treats it as a prefill).
    supports_prefill: ClassVar[bool] = True
    # Takes ``repetition`` (llm.common.Repetition) and ``avoid`` (words to ban) per call.
    supports_steering: ClassVar[bool] = True
    model_path: str
    n_ctx: int = 4096
    n_threads: int = 2
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 384
    stop: list[str] | None = None
    seed: int | None = None
    repetition: Repetition | None = None  # the default when a call gives none

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
        return llama_server(self.model_path, self.n_ctx, self.n_threads)

    def restore_prefix(self, head: str | Sequence[BaseMessage]) -> bool:
        """Before a first turn: load the saved state of this prompt head (the system prompt, or the messages
        that open every conversation), if one was prepared."""
        return prompt_state.restore(self.server, self.model_path, head)

    def prepare_prefix(self, head: str | Sequence[BaseMessage]) -> bool:
        """Make sure a saved state of this prompt head exists (computing it takes seconds); True if made now."""
        if prompt_state.has_state(self.model_path, head):
            return False
        prompt_state.save(self.server, self.model_path, head)
        return True

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> dict:
        req: dict[str, Any] = {
            "messages": openai_messages(messages),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "cache_prompt": True,  # reuse the KV cache of the longest shared prefix
        }
        stops = merge_stop(self.stop, stop, kwargs.get("stop"))
        if stops:
            req["stop"] = stops
        seed = kwargs.get("seed", self.seed)
        if seed is not None:
            req["seed"] = seed
        repetition = kwargs.get("repetition") or self.repetition
        if repetition is not None:
            req |= repetition.for_llamacpp()
        avoid = kwargs.get("avoid") or ()
        if avoid:
            req["logit_bias"] = [[i, False] for i in banned_tokens(self.server, self.model_path, avoid)]
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

        for resp in pump(produce):
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


