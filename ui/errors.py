"""Turn any exception into one sentence for the page; unexpected ones are logged with their traceback."""
from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger("zhiyin.app")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message already names the fix (imported lazily: some modules are heavy)."""
    from characters import CharacterError
    from knowledge_base.reading import ReadError
    from knowledge_base.store import StoreError
    from llm import ModelMissing
    from ragchat import ChatError
    from registry import UnknownName

    types: list[type[BaseException]] = [ChatError, CharacterError, ReadError, StoreError, ModelMissing, UnknownName]
    for module, name in (("voice.audio", "VoiceError"), ("talking_head.video", "MediaError"),
                         ("talking_head", "PortraitError"), ("talking_head.enhance", "StageUnavailable")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except Exception:  # a stage that cannot import must not break error reporting
            continue
    return tuple(types)


def is_user_error(exc: BaseException) -> bool:
    """True for errors the user can fix from the message alone."""
    return isinstance(exc, _user_error_types())


def message(exc: BaseException, doing: str = "that") -> str:
    """One sentence for ``st.error``: the error's own message if it names the fix, else a short apology.

    Unexpected errors are written to stderr with their traceback, never shown on the page.
    """
    if is_user_error(exc):
        text = " ".join(str(exc).split())
        return text if text else f"{type(exc).__name__} while {doing}."
    print(f"zhiyin app: unexpected error while {doing}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return (f"Something went wrong while {doing} ({type(exc).__name__}); the details are in the server log. "
            "Try again, or start a new conversation.")
