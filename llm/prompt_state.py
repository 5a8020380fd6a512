"""Saved llama.cpp states of each character's static prompt head, so a first answer starts fast.

A first turn used to evaluate the whole prompt (card, rules, passages, question) from scratch:
~350 tokens of head alone, 4-8 s on 2 cores before the passages. The head is the same for every
conversation of a character in a mode, so its KV state is computed once per (model, head text),
saved to a file with llama.cpp's slot save (~10 MB), and restored into the slot (a few ms) before
each first turn: only the passages and the question are then evaluated. In role-play the head goes on
past the system prompt with her example exchanges, sent as the conversation's first turns. The file name hashes the
model file and the head text, so a changed card, mode text or model computes a new state itself.
"""
from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from settings import paths

WARM_QUESTION = "."  # a one-token user turn: the template's text after the head is shared by any question


def state_dir() -> Path:
    folder = paths().cache / "prompt-states"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def head_messages(head: str | Sequence[Any]) -> list[dict[str, Any]]:
    """The head as OpenAI-style messages: a string is the system prompt alone."""
    if isinstance(head, str):
        return [{"role": "system", "content": head}]
    from llm.common import openai_messages

    return openai_messages(list(head))


def _identity(head: str | Sequence[Any]) -> str:
    """What names a head's state: the system prompt itself (as before), or every message of it."""
    messages = head_messages(head)
    return messages[0]["content"] if len(messages) == 1 and messages[0]["role"] == "system" else \
        json.dumps(messages, ensure_ascii=False)


def state_name(model_path: str, head: str | Sequence[Any]) -> str:
    p = Path(model_path)
    ident = f"{p.resolve()}|{p.stat().st_size if p.exists() else 0}|{_identity(head)}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32] + ".bin"


def _slot(server: Any, action: str, filename: str) -> dict:
    """llama.cpp's own slot endpoint on the in-process server (loopback only)."""
    req = urllib.request.Request(f"{server.listening_address}/slots/0?action={action}",
                                 data=json.dumps({"filename": filename}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.load(resp)


def has_state(model_path: str, head: str | Sequence[Any]) -> bool:
    return (state_dir() / state_name(model_path, head)).is_file()


def restore(server: Any, model_path: str, head: str | Sequence[Any]) -> bool:
    """Load the saved state of ``head`` into the slot; False when there is none (or it fails)."""
    name = state_name(model_path, head)
    if not (state_dir() / name).is_file():
        return False
    try:
        return int(_slot(server, "restore", name).get("n_restored", 0)) > 0
    except OSError:  # a damaged file or a server without the endpoint: the turn evaluates the head itself
        return False


def save(server: Any, model_path: str, head: str | Sequence[Any]) -> Path:
    """Evaluate ``head`` alone and save its state (what a first turn will restore)."""
    server.handle_chat_completions({"messages": [*head_messages(head), {"role": "user", "content": WARM_QUESTION}],
                                    "max_tokens": 1, "cache_prompt": True})
    name = state_name(model_path, head)
    _slot(server, "save", name)
    return state_dir() / name
