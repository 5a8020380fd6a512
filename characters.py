"""Character cards: who a character is, where her texts live, how she looks and sounds.

A character is a folder ``knowledge/<id>/`` holding ``card.yaml`` and ``texts/``.
Characters are looked up under ``$ZHIYIN_HOME/knowledge`` first, then among the
ones bundled with the repository; a bundled character is copied into the home
folder the first time something is written to it, so the repository stays clean.
"""
from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from settings import BUNDLED, paths

CARD_FILE = "card.yaml"
TEXTS_DIR = "texts"
_ID_OK = re.compile(r"^[\w][\w-]{0,63}$", re.UNICODE)


class CharacterError(ValueError):
    """A character id or card that cannot be used; the message says how to fix it."""


@dataclass
class Card:
    """Everything the app knows about a character before reading her book."""

    id: str
    name: str
    language: str = "zh"  # zh | en
    aliases: list[str] = field(default_factory=list)
    source_work: str = ""
    description: str = ""  # one line for the character picker
    persona: str = ""
    speaking_style: str = ""
    greeting: str = ""
    # A few exchanges in her voice, as in SillyTavern's example messages or ChatHaruhi's dialogues:
    # small models copy a demonstrated first-person reply far more reliably than an instruction.
    example_dialogue: list[dict[str, str]] = field(default_factory=list)  # [{"user": ..., "reply": ...}]
    voice: dict[str, str] = field(default_factory=dict)  # engine name -> voice name
    avatar: str = ""  # file under avatars/ (or a path relative to the character folder)

    @property
    def lang(self) -> str:
        """The prompt and voice language: "zh" for a Chinese card, "en" for anything else."""
        return "zh" if self.language == "zh" else "en"

    @property
    def names(self) -> list[str]:
        """The name and every alias, longest first (so 林黛玉 matches before 黛玉)."""
        return sorted({self.name, *self.aliases} - {""}, key=len, reverse=True)


def safe_id(text: str) -> str:
    """Turn a user-given id or name into a safe folder name, or refuse with a reason.

    Spaces become '-', letters of any script and digits are kept; anything that could
    walk the file system ('..', '/', '\\') is refused rather than silently rewritten.
    """
    raw = unicodedata.normalize("NFKC", str(text)).strip()
    if not raw:
        raise CharacterError("A character id cannot be empty; use letters, digits, '-' or '_'.")
    if "/" in raw or "\\" in raw or ".." in raw or raw.startswith("."):
        raise CharacterError(
            f"'{text}' is not a valid character id: it may not contain '/', '\\' or '..'. "
            "Use letters, digits, '-' or '_' (for example 'daiyu')."
        )
    cid = re.sub(r"\s+", "-", raw)
    cid = re.sub(r"[^\w-]", "", cid).strip("-_") or ""
    if not _ID_OK.match(cid):
        raise CharacterError(
            f"'{text}' is not a valid character id; use 1-64 letters, digits, '-' or '_'."
        )
    return cid


def character_dir(character_id: str) -> Path:
    """The folder of a character: the home copy if any, else the bundled one, else where a new one goes."""
    cid = safe_id(character_id)
    own = paths().knowledge / cid
    if own.is_dir():
        return own
    bundled = BUNDLED.knowledge / cid
    return bundled if bundled.is_dir() else own


def writable_dir(character_id: str) -> Path:
    """The character's folder under ZHIYIN_HOME, copying a bundled character there first."""
    cid = safe_id(character_id)
    own = paths().knowledge / cid
    bundled = BUNDLED.knowledge / cid
    if not own.exists() and bundled.is_dir() and bundled.resolve() != own.resolve():
        shutil.copytree(bundled, own)
    own.mkdir(parents=True, exist_ok=True)
    (own / TEXTS_DIR).mkdir(exist_ok=True)
    return own


def exists(character_id: str) -> bool:
    return (character_dir(character_id) / CARD_FILE).is_file()


def load_card(character_id: str) -> Card:
    """Read a character's card; a missing or broken card raises CharacterError with the fix."""
    folder = character_dir(character_id)
    path = folder / CARD_FILE
    if not path.is_file():
        raise CharacterError(
            f"No character '{character_id}'. Create it with "
            f"`python gen_chroma.py build {character_id} PATH/TO/BOOK.txt --name NAME`."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CharacterError(f"The card {path} is not valid YAML ({exc}); fix or delete it.") from exc
    known = set(Card.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
    data["id"] = folder.name
    data.setdefault("name", folder.name)
    return Card(**data)


def save_card(card: Card) -> Path:
    """Write a card into the character's home folder (atomically) and return its path."""
    folder = writable_dir(card.id)
    path = folder / CARD_FILE
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(asdict(card), allow_unicode=True, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


def create_character(character_id: str, name: str | None = None, language: str = "zh") -> Card:
    """Create a character with a minimal card (or return the existing one)."""
    cid = safe_id(character_id)
    if exists(cid):
        return load_card(cid)
    card = Card(id=cid, name=name or character_id, language=language,
                description=f"{name or character_id}", greeting="")
    save_card(card)
    return card


def list_characters() -> list[Card]:
    """Every character with a card, home ones shadowing bundled ones of the same id."""
    seen: dict[str, Card] = {}
    for root in (paths().knowledge, BUNDLED.knowledge):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name not in seen and (folder / CARD_FILE).is_file():
                try:
                    seen[folder.name] = load_card(folder.name)
                except CharacterError:
                    continue  # a broken card must not hide the others
    return list(seen.values())


def texts_dir(character_id: str) -> Path:
    return character_dir(character_id) / TEXTS_DIR


def avatar_path(card: Card) -> Path | None:
    """The portrait file of a character, if it exists."""
    if not card.avatar:
        return None
    for base in (character_dir(card.id), paths().avatars, BUNDLED.avatars):
        candidate = base / card.avatar
        if candidate.is_file():
            return candidate
    return None
