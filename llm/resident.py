"""One chat model in memory at a time.

A 1.5B GGUF takes ~1.7 GB and a dequantised transformers model several: a process that kept
every model it ever loaded (one per settings the page was given) grew until the machine
swapped. Each backend asks here for its loaded weights by a key of only what decides them
(file, adapter, context size, threads); sampling settings are not in the key, so changing the
temperature never reloads. A new key frees the old model first, so two never need to fit at once.
"""
from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

_lock = threading.Lock()
_key: Hashable | None = None
_value: Any = None
loads = 0  # how many times a model was loaded in this process (tests and logs read it)


def get(key: Hashable, load: Callable[[], Any]) -> Any:
    """The loaded model for ``key``: the resident one if it matches, else the old one is freed and ``load()`` runs."""
    global _key, _value, loads
    with _lock:
        if _value is not None and _key == key:
            return _value
        _release_locked()
        value = load()
        _key, _value = key, value
        loads += 1
        return value


def resident_key() -> Hashable | None:
    """The key of the model in memory now, or None."""
    return _key


def release() -> None:
    """Free the resident model (an answer still streaming from it keeps it alive until it ends)."""
    with _lock:
        _release_locked()


def _release_locked() -> None:
    global _key, _value
    _key, _value = None, None
    gc.collect()  # llama.cpp and torch free their memory when the last reference goes
    torch = sys.modules.get("torch")  # only when a backend already imported it: never load torch to free llama.cpp
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
