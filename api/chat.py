"""POST /v1/chat/completions: one turn of her conversation through the same pipeline as the page.

A turn runs in its own worker thread (``TurnRun``) that first takes the generation gate: llama.cpp has
one slot, so in-process models answer one request at a time and a second client waits (its
``zhiyin.queued_ms`` says how long; it never fails for waiting). Events travel to the event loop
through a queue. A client that goes away cancels the run: the worker stops iterating the turn and
closes it, which cancels generation in the backend (llama.cpp stops at its next token).
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from langchain_core.callbacks import BaseCallbackHandler

from api.conversation import Conversation, ModelId, check_context, conversation_for, require_store, resolve_model
from api.errors import APIError, sse_error
from api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
)
from api.security import check_key
from events import Done, Sources, TextDelta
from pipeline import build_pipeline
from prompting import MODES, count_tokens
from ragchat import ChatError

log = logging.getLogger("zhiyin.api")
router = APIRouter(dependencies=[Depends(check_key)])

KEEPALIVE_S = 10.0  # an SSE comment while a streamed request waits its turn (proxies drop silent streams)
_END = object()


class UsageRecorder(BaseCallbackHandler):
    """Reads the backend's own token counts and finish reason from LangChain's end-of-generation event."""

    def __init__(self) -> None:
        self.prompt_estimate = 0
        self.usage: dict[str, int] = {}
        self.finish: str | None = None

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.prompt_estimate = sum(count_tokens(str(m.content)) for m in messages[0])

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        gens = response.generations[0] if response.generations else []
        if not gens:
            return
        message = getattr(gens[0], "message", None)
        self.usage = dict(getattr(message, "usage_metadata", None) or {})
        meta = dict(getattr(message, "response_metadata", None) or {}) | dict(gens[0].generation_info or {})
        self.finish = meta.get("finish_reason")

    def totals(self, answer: str) -> Usage:
        prompt = int(self.usage.get("input_tokens") or self.prompt_estimate)
        completion = int(self.usage.get("output_tokens") or count_tokens(answer))
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def finish_reason(self) -> str:
        return "length" if self.finish == "length" else "stop"


class TurnRun:
    """One turn in a worker thread that holds the generation gate; ``cancel()`` stops it from any thread."""

    def __init__(self, service: Any, model: ModelId, conversation: Conversation, sampling: dict[str, Any],
                 rid: str, user: str | None) -> None:
        self.service = service
        self.model = model
        self.conversation = conversation
        self.sampling = sampling
        self.rid = rid
        self.user = user
        self.usage = UsageRecorder()
        self.queued_ms = 0.0
        self.pieces = 0
        self._cancelled = threading.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> TurnRun:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._work, name=f"turn-{self.rid[-6:]}", daemon=True).start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)  # type: ignore[union-attr]
        except RuntimeError:  # the event loop closed (server shutting down): nobody is listening
            self._cancelled.set()

    def _work(self) -> None:
        t0 = time.perf_counter()
        gate = self.service.gate
        while not gate.acquire(timeout=0.25):
            if self._cancelled.is_set():
                self._put(_END)
                return
        outcome = "error"
        try:
            self.queued_ms = round((time.perf_counter() - t0) * 1000, 1)
            card = self.conversation.card_for(self.model.card)
            pipe = build_pipeline(card, self.model.mode, self.service.settings, llm=self.service.llm)
            pipe.companion.history = list(self.conversation.history)
            turn = pipe.turn(self.conversation.question, callbacks=[self.usage], **self.sampling)
            try:
                for event in turn:
                    if isinstance(event, TextDelta):
                        self.pieces += 1
                    self._put(event)
                    if self._cancelled.is_set():
                        outcome = "cancelled"
                        break
                else:
                    outcome = self.usage.finish_reason()
            finally:
                turn.close()  # a cancelled turn stops generating here
        except BaseException as exc:  # handed to the request, which answers it as an error
            self._put(exc)
        finally:
            gate.release()
            self._put(_END)
            log.info("turn id=%s model=%s user=%s queued_ms=%.0f pieces=%d max_tokens=%s outcome=%s",
                     self.rid, self.model.id, self.user or "-", self.queued_ms, self.pieces,
                     self.sampling.get("max_tokens", "-"), outcome)

    async def next(self, timeout: float | None = None) -> Any:
        """The next event, exception or ``_END``; raises TimeoutError after ``timeout`` seconds of silence."""
        return await asyncio.wait_for(self._queue.get(), timeout)


def as_api_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ChatError):
        return APIError(503, str(exc), code="unavailable")
    log.error("turn failed", exc_info=exc)
    return APIError(500, f"Generation failed ({type(exc).__name__}: {exc}); see the server log.")


def public_sources(sources: list[dict]) -> list[dict]:
    """The passages as sent to the model (``passage``), with where they come from; the whole chunk is left out."""
    return [{k: v for k, v in s.items() if k != "text"} for s in sources]


def sampling_of(body: ChatCompletionRequest) -> dict[str, Any]:
    """The request's sampling settings, only those it sets (the mode's own temperature otherwise)."""
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    out: dict[str, Any] = {"temperature": body.temperature, "top_p": body.top_p,
                           "max_tokens": body.max_completion_tokens or body.max_tokens,
                           "stop": [s for s in stop or [] if s] or None, "seed": body.seed}
    return {k: v for k, v in out.items() if v is not None}


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.n != 1:
        raise APIError(400, "Only n=1 is supported: she gives one answer per turn.", param="n", code="unsupported_value")
    if body.tools:
        raise APIError(400, "Tools are not supported: her answers never call tools.", param="tools",
                       code="unsupported_parameter")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported.", param="logprobs", code="unsupported_parameter")
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise APIError(400, f"response_format '{kind}' is not supported; she answers in text.",
                       param="response_format", code="unsupported_value")
    if isinstance(body.stop, list) and len(body.stop) > 4:
        raise APIError(400, "At most 4 stop sequences.", param="stop", code="invalid_value")


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    service = request.app.state.zhiyin
    _refuse_unsupported(body)
    model = resolve_model(body.model)
    conversation = conversation_for(body, service.settings.api_max_messages)
    sampling = sampling_of(body)
    check_context(model.card, MODES.create(model.mode), conversation,
                  sampling.get("max_tokens", service.settings.max_tokens), service.context)
    require_store(model)
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    run = TurnRun(service, model, conversation, sampling, rid, body.user).start()
    meta = {"id": rid, "created": int(time.time()), "model": body.model, "system_fingerprint": service.fingerprint}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(run, meta, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _complete(run, meta, request)


def _timings(run: TurnRun, done: Done | None) -> dict[str, Any]:
    out: dict[str, Any] = {"queued_ms": run.queued_ms}
    if done is not None:
        out |= {k: v for k, v in done.timings.items() if k.endswith("_ms")}
        if done.warning:
            out["warning"] = done.warning
    return out


async def _complete(run: TurnRun, meta: dict, request: Request) -> ChatCompletion:
    """Wait for the whole turn; a client that hangs up meanwhile cancels it."""
    parts: list[str] = []
    sources: list[dict] = []
    done: Done | None = None
    try:
        while True:
            try:
                item = await run.next(timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    run.cancel()
                    raise APIError(499, "The client closed the request.") from None
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise as_api_error(item)
            if isinstance(item, Sources):
                sources = public_sources(item.sources)
            elif isinstance(item, TextDelta):
                parts.append(item.text)
            elif isinstance(item, Done):
                done = item
    finally:
        run.cancel()  # a no-op once the turn finished
    answer = done.answer if done is not None else "".join(parts).strip()
    return ChatCompletion(
        **meta,
        choices=[Choice(message=ResponseMessage(content=answer), finish_reason=run.usage.finish_reason())],
        usage=run.usage.totals(answer), sources=sources, zhiyin=_timings(run, done),
    )


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _sse(run: TurnRun, meta: dict, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE ``data:`` chunks as OpenAI sends them, ending with ``data: [DONE]``; a hang-up cancels the turn."""

    def chunk(delta: Delta, finish: str | None = None, **extra: Any) -> dict:
        body = ChatCompletionChunk(**meta, choices=[ChunkChoice(delta=delta, finish_reason=finish)])
        out = body.model_dump(exclude={"usage"} if not include_usage else set())
        out["choices"][0]["delta"] = delta.model_dump(exclude_none=True)  # as OpenAI: {"content": "..."}
        return out | extra

    parts: list[str] = []
    try:
        while True:
            try:
                item = await run.next(timeout=KEEPALIVE_S)
            except TimeoutError:
                yield b": waiting for the model\n\n"  # a comment: clients ignore it, the connection stays open
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                yield sse_error(as_api_error(item))
                break
            if isinstance(item, Sources):
                yield _data(chunk(Delta(role="assistant", content=""), sources=public_sources(item.sources)))
            elif isinstance(item, TextDelta):
                parts.append(item.text)
                yield _data(chunk(Delta(content=item.text)))
            elif isinstance(item, Done):
                yield _data(chunk(Delta(), run.usage.finish_reason(), zhiyin=_timings(run, item)))
                if include_usage:
                    usage = run.usage.totals(item.answer).model_dump()
                    yield _data(ChatCompletionChunk(**meta, choices=[]).model_dump() | {"usage": usage})
        yield b"data: [DONE]\n\n"
    finally:
        run.cancel()  # the client went away (or the stream ended): stop generating
