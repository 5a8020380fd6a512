"""What is mined once from a character's book and kept per store version: her book's proper nouns and
words by sound (voice/priming.py), its vocabulary (persona/strange.py). A new version (a book added,
the upgrade done) is mined afresh; a store being replaced or damaged gives the caller's empty value."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("knowledge_base")

_mined_cache: dict[str, Any] = {}
_mined_lock = threading.Lock()


def version_of(store: Any, character_id: str) -> tuple[Path | None, list[str] | None]:
    """The store version folder and its chunk texts if already in memory (a KnowledgeStore)."""
    from knowledge_base.store import current_version, store_root

    if store is None:
        try:
            return current_version(store_root(character_id)), None
        except ValueError:  # an id that is not a folder name: no store
            return None, None
    if isinstance(store, (str, Path)):
        path = Path(store)
        return (path if (path / "manifest.json").is_file() else current_version(path)), None
    chunks = getattr(store, "chunks", None)
    return getattr(store, "version", None), [c["text"] for c in chunks] if chunks else None


def per_version(kind: str, card: Any, store: Any, mine: Any, empty: Any) -> Any:
    """``mine(chunk texts)`` for the card's store version, computed once per version; ``empty`` when
    there is no store (no book yet) or it cannot be read (being replaced or damaged)."""
    version, texts = version_of(store, card.id)
    if version is None:
        return empty
    key = f"{kind}|{version.resolve()}|{card.lang}"
    with _mined_lock:
        if key in _mined_cache:
            return _mined_cache[key]
    try:
        if texts is None:
            from knowledge_base.store import read_chunks

            texts = [c["text"] for c in read_chunks(version)]
        found = mine(texts)
    except (OSError, ValueError) as exc:  # a store being replaced or damaged: listen without it
        log.warning("no %s from %s (%s)", kind, version, exc)
        return empty
    with _mined_lock:
        _mined_cache[key] = found
    return found
