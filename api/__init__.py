"""Zhiyin as a service: an OpenAI-compatible API where every character (and mode) is a model.

    python api.py [--host 127.0.0.1] [--port 8000]     # or: python start.py --api

    server.py        the FastAPI app and the uvicorn command line
    chat.py          POST /v1/chat/completions (streaming SSE and not), through pipeline.build_pipeline
    audio.py         POST /v1/audio/speech and /v1/audio/transcriptions
    conversation.py  model ids, the client's messages -> her conversation, the context-length check
    schemas.py       OpenAI's bodies as pydantic models
    errors.py        OpenAI's error JSON for every failure
    security.py      loopback unless keyed, bearer keys compared in constant time
    llama_server.py  llama.cpp's own OpenAI-compatible server (xllamacpp) as a process, for scale-out

Reference: docs/api.md.
"""
