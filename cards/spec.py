"""What the card specs say about a card's JSON object.

character-card-spec-v2 (spec_v1.md, spec_v2.md) and character-card-spec-v3 (SPEC_V3.md): telling a card
from any other JSON, bringing V1 and V2 cards to V3's shape (unknown fields kept where they were), the V2
object backfilled into a V3 PNG's ``chara`` chunk, and the ``{{char}}`` / ``{{user}}`` macros.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from characters import CharacterError

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_STRINGS = (*V1_FIELDS, "creator_notes", "system_prompt", "post_history_instructions", "creator",
              "character_version")
V2_LISTS = ("alternate_greetings", "tags")
V2_FIELDS = (*V2_STRINGS, *V2_LISTS, "character_book", "extensions")
SPEC_V2, SPEC_V3 = "chara_card_v2", "chara_card_v3"
# V3: a backfilled V2 object SHOULD say so in creator_notes, and that note SHOULD be trimmed on import.
BACKFILL_NOTE = ("This character card is Character Card V3, but it is loaded as a Character Card V2. "
                 "Please use a Character Card V3 compatible application to use this character card properly.")


class CardError(CharacterError):
    """A file that is not a usable character card; the message names the file and what to do."""


def _kind(obj: Any) -> str:
    return {list: "a list", str: "a text", int: "a number", float: "a number", bool: "true/false",
            type(None): "null"}.get(type(obj), type(obj).__name__)


def version_of(obj: Any, name: str) -> int:
    """1, 2 or 3 for a card's JSON object; CardError (naming ``name``) for anything else."""
    if not isinstance(obj, dict):
        raise CardError(f"{name} holds JSON, but {_kind(obj)}, not a character card; "
                        "export the character from SillyTavern, RisuAI or Agnai as a card.")
    spec = obj.get("spec")
    if spec == "lorebook_v3":
        raise CardError(f"{name} is a lorebook (lorebook_v3), not a character card; import the character's "
                        "card instead (its lorebook comes with it).")
    if spec in (SPEC_V2, SPEC_V3):
        data = obj.get("data")
        if not isinstance(data, dict) or not _has_name(data):
            raise CardError(f"{name} says it is a {spec} card but has no 'data' with a 'name'; "
                            "the file is damaged, export the card again.")
        return 2 if spec == SPEC_V2 else 3
    if spec is not None:
        raise CardError(f"{name} says it is '{spec}', which is not a character card "
                        f"({SPEC_V2} or {SPEC_V3}); export the character as a card.")
    # V1 has no marker: a name plus the other V1 fields (any one of them), so that e.g. a package.json's
    # "name" is not taken for a character.
    if _has_name(obj) and any(k in obj for k in V1_FIELDS[1:]):
        return 1
    raise CardError(f"{name} is JSON but not a character card (no 'spec' and no V1 fields such as "
                    "'name' and 'description'); export the character as a card.")


def _has_name(d: dict) -> bool:
    return isinstance(d.get("name"), (str, int, float)) and str(d["name"]).strip() != ""


def spec_version(obj: dict) -> float:
    try:
        return float(obj.get("spec_version", 0))
    except (TypeError, ValueError):
        return 0.0


def to_v3(obj: Any, name: str) -> tuple[dict, list[str]]:
    """The card as a V3 object with every mandatory field present, plus notes on what was mended.

    Unknown fields stay where they were: inside ``data`` for V2/V3, at the top level for V1 (whose
    fields are the top level), so that an export gives them back untouched.
    """
    version = version_of(obj, name)
    notes: list[str] = []
    if version == 1:
        top = {k: copy.deepcopy(v) for k, v in obj.items() if k not in V1_FIELDS}
        data = {k: copy.deepcopy(obj.get(k, "")) for k in V1_FIELDS}
    else:
        top = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("spec", "spec_version", "data")}
        data = copy.deepcopy(obj["data"])
        if version == 3 and spec_version(obj) > 3.0:
            notes.append(f"The card is Character Card V3 version {obj.get('spec_version')}, newer than the 3.0 "
                         "Zhiyin reads; what 3.0 defines was imported, the rest is kept for export.")
    for key in V2_STRINGS:
        value = data.get(key)
        data[key] = "" if value is None else value if isinstance(value, str) else str(value)
    for key in (*V2_LISTS, "group_only_greetings"):
        value = data.get(key)
        if isinstance(value, str):
            value = [value] if value.strip() else []
        data[key] = [str(v) for v in value if v is not None] if isinstance(value, list) else []
    if not isinstance(data.get("extensions"), dict):
        data["extensions"] = {}
    book = data.get("character_book")
    if book is not None and not (isinstance(book, dict) and isinstance(book.get("entries", []), list)):
        notes.append("The card's lorebook (character_book) is not a lorebook object; it was left out.")
        book = None
    if book is None:
        data.pop("character_book", None)
    if "assets" in data and not (isinstance(data["assets"], list)
                                 and all(isinstance(a, dict) for a in data["assets"])):
        notes.append("The card's 'assets' is not a list of assets; it was left out.")
        data.pop("assets")
    if data["creator_notes"].startswith(BACKFILL_NOTE):  # our own (or anyone's) V2 backfill warning
        data["creator_notes"] = data["creator_notes"][len(BACKFILL_NOTE):].lstrip("\n")
    v3 = {**top, "spec": SPEC_V3, "spec_version": str(obj.get("spec_version") or "3.0") if version == 3 else "3.0",
          "data": data}
    return v3, notes


def to_v2(v3: dict) -> dict:
    """The V2 object backfilled from a V3 card (for a PNG's ``chara`` chunk): V2's fields only,
    the backfill note on creator_notes, decorators removed from the lorebook (V3 says both)."""
    src = v3["data"]
    data = {k: copy.deepcopy(src[k]) for k in V2_FIELDS if k in src}
    data["creator_notes"] = BACKFILL_NOTE + ("\n\n" + src["creator_notes"] if src.get("creator_notes") else "")
    book = data.get("character_book")
    if isinstance(book, dict):
        for entry in book.get("entries", []):
            if isinstance(entry, dict) and isinstance(entry.get("content"), str):
                entry["content"] = strip_decorators(entry["content"])
    return {"spec": SPEC_V2, "spec_version": "2.0", "data": data}


_DECORATOR = re.compile(r"^[ \t]*@@.*(?:\r?\n|$)", re.M)


def strip_decorators(content: str) -> str:
    """A lorebook entry's content without its ``@@decorator`` lines (and the newlines around them)."""
    return _DECORATOR.sub("", content).strip("\r\n")


# ------------------------------------------------------------------------------------ macros
_CHAR = re.compile(r"\{\{\s*char\s*\}\}|<\s*(?:bot|char)\s*>", re.I)
_USER = re.compile(r"\{\{\s*user\s*\}\}|<\s*user\s*>", re.I)
# V3's comment macros: replaced with nothing in a prompt.
_COMMENT = re.compile(r"\{\{\s*(?://|comment\s*:|hidden_key\s*:)[^{}]*\}\}", re.I)
USER_NAME = {"zh": "来访者", "en": "Visitor"}  # V1: a default user name MUST exist; the prompt's own word


def resolve(text: str, char: str, user: str) -> str:
    """``{{char}}``/``<BOT>``/``<char>`` -> the character, ``{{user}}``/``<USER>`` -> the user, comments removed
    (case-insensitive, as V1 and V3 require)."""
    if not text:
        return text
    text = _COMMENT.sub("", text)
    text = _CHAR.sub(lambda _m: char, text)
    return _USER.sub(lambda _m: user, text)


_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.I)


def with_original(card_text: str, original: str) -> str:
    """A card's ``system_prompt`` or ``post_history_instructions`` in place of the app's own text.

    V2: the card's text replaces ours by default, ``{{original}}`` in it stands for ours, and an empty
    field keeps ours.
    """
    if not card_text or not card_text.strip():
        return original
    return _ORIGINAL.sub(lambda _m: original, card_text).strip()


def char_name(data: dict) -> str:
    """What ``{{char}}`` stands for: V3's nickname when there is one, else the name."""
    nick = data.get("nickname")
    return nick.strip() if isinstance(nick, str) and nick.strip() else str(data.get("name", "")).strip()
