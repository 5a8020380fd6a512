"""The app (FastAPI) and its command line (uvicorn): ``python api.py [--host 127.0.0.1] [--port 8000]``.

FastAPI + uvicorn because they are what the OpenAI-compatible servers we mirror use (vLLM, LMDeploy):
pydantic models give OpenAI's schemas field for field and turn a malformed body into one error; Starlette's
StreamingResponse watches for the client's disconnect while it streams (and cancels the body iterator,
which is how a hang-up stops generation); uvicorn serves SSE without buffering. One process holds one
chat model, shared by every request (see api/chat.py for how requests take turns).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from fastapi import Depends, FastAPI

from api import audio, chat
from api.conversation import all_models, resolve_model
from api.errors import APIError, install
from api.schemas import ModelCard, ModelList
from api.security import BodyLimit, check_key, is_loopback, refuse_open_without_key
from knowledge_base.store import KnowledgeStore
from settings import Settings, load_settings

log = logging.getLogger("zhiyin.api")
IN_PROCESS_DEFAULT_CONTEXT = 4096


@dataclass
class Service:
    """What every request shares: settings, the one chat model, and the gates that serialise work."""

    settings: Settings
    llm: Any
    gate: threading.BoundedSemaphore
    context: int
    fingerprint: str
    audio: threading.Lock = field(default_factory=threading.Lock)
    started: int = field(default_factory=lambda: int(time.time()))


def parallel_turns(settings: Settings) -> int:
    """How many turns generate at once: in-process models have one slot; a model server batches."""
    if settings.api_parallel > 0:
        return settings.api_parallel
    return 4 if settings.llm_backend == "openai" else 1


def make_service(settings: Settings, llm: Any = None) -> Service:
    """Load the chat model once (a missing model fails here, before the server listens)."""
    from llm import get_chat_model, model_label

    llm = llm or get_chat_model(settings)
    context = settings.api_context_tokens or int(getattr(llm, "n_ctx", 0) or IN_PROCESS_DEFAULT_CONTEXT)
    return Service(settings, llm, threading.BoundedSemaphore(parallel_turns(settings)), context, model_label(llm))


def create_app(service: Service) -> FastAPI:
    """The API over one loaded chat model."""
    settings = service.settings
    app = FastAPI(title="Zhiyin", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.zhiyin = service
    install(app)
    app.add_middleware(BodyLimit, max_body=settings.api_max_body_bytes, max_upload=settings.api_max_upload_bytes)
    app.include_router(chat.router)
    app.include_router(audio.router)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": service.fingerprint}

    def card_of(m: Any) -> ModelCard:
        return ModelCard(id=m.id, created=service.started, name=m.card.name, mode=m.mode, language=m.card.lang,
                         ready=KnowledgeStore.exists(m.card.id))

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> ModelList:
        return ModelList(data=[card_of(m) for m in all_models()])

    @app.get("/v1/models/{model_id}", dependencies=[Depends(check_key)])
    async def model(model_id: str) -> ModelCard:
        return card_of(resolve_model(model_id))

    return app


def warm_characters(service: Service) -> None:
    """Before the first question, what a role-play turn would wait for: each character's guard lists (her
    world's words, her book's other people; ~2-4 s for 红楼梦), as the page's warm-up does. Run in a thread."""
    from characters import list_characters
    from ragchat import Companion

    for card in list_characters():
        if not KnowledgeStore.exists(card.id):
            continue
        try:
            Companion(card, mode="roleplay", llm=service.llm, settings=service.settings).warm()
        except Exception as exc:  # the first question mines them itself, and reports a failure there
            log.warning("%s's guard lists were not prepared: %s", card.id, exc)


def refuse_calling_itself(settings: Settings, host: str, port: int) -> None:
    """The `openai` backend pointed at this very server would wait on itself forever."""
    if settings.llm_backend != "openai":
        return
    url = urlparse(settings.openai_base_url)
    local = is_loopback(url.hostname or "")
    here = url.hostname == host or (local and (is_loopback(host) or host in ("0.0.0.0", "::")))
    if here and (url.port or (443 if url.scheme == "https" else 80)) == port:
        raise SystemExit(f"error: the chat model's server ({settings.openai_base_url}) is this API's own address; "
                         f"serve the API on another port (--port) or point openai_base_url at the model server.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="api.py", description="Zhiyin's OpenAI-compatible API: every character "
                                                           "as a model.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (beyond loopback needs an API key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    from llm import ModelMissing

    try:
        settings = load_settings()
        refuse_open_without_key(args.host, settings.api_key)
        refuse_calling_itself(settings, args.host, args.port)
        service = make_service(settings)
    except (ModelMissing, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    import uvicorn

    threading.Thread(target=warm_characters, args=(service,), daemon=True, name="warm-characters").start()
    print(f"Zhiyin API at http://{args.host}:{args.port}/v1 ({service.fingerprint})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


__all__ = ["APIError", "Service", "create_app", "make_service", "main", "warm_characters"]
