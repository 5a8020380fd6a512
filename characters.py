"""Character cards: who a character is, where her texts live, how she looks and sounds.

A character is a folder ``knowledge/<id>/`` holding ``card.yaml`` and ``texts/`` (and, for one imported
from a community character card, ``lorebook.json``, ``card_source.json``, ``avatar.png``: see cards/).
Characters are looked up under ``$ZHIYIN_HOME/knowledge`` first, then among the
ones bundled with the repository; a bundled character is copied into the home
folder the first time something is written to it, so the repository stays clean.

CLI: ``python characters.py list|import PATH [--id ID]|export ID --out FILE.png|.json|.charx [--json]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from settings import BUNDLED, paths

CARD_FILE = "card.yaml"
TEXTS_DIR = "texts"
LOREBOOK_FILE = "lorebook.json"  # the card's character_book, kept as the spec has it
SOURCE_FILE = "card_source.json"  # the imported card's JSON, so its unknown fields survive an export
log = logging.getLogger("zhiyin.characters")
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
    # From community character cards (cards/); empty for a character made here.
    scenario: str = ""  # the circumstances of the conversation, in every prompt
    # Her world's limits, in her terms (what she cannot know): shown in role-play, and it turns on the
    # guard against modern words (persona/guard.py). Empty for a character of our own time.
    era: str = ""
    greetings: list[str] = field(default_factory=list)  # alternate greetings, offered besides ``greeting``
    system_prompt: str = ""  # replaces the mode's rules in role-play; {{original}} stands for them
    post_history_instructions: str = ""  # replaces the reminder after the question; {{original}} likewise
    creator_notes: str = ""  # for the reader of the card, never for the model
    tags: list[str] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)  # the card's extensions, kept verbatim
    # Validation when read from YAML (see load_card): a number where a text is expected is fine.
    __pydantic_config__ = ConfigDict(coerce_numbers_to_str=True)

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


_VALIDATE = TypeAdapter(Card)
_SHAPES = {  # what a field must look like, for the sentence that names it
    "aliases": "a list of names, e.g. `aliases: [黛玉, 林姑娘]`",
    "greetings": "a list of texts, e.g. `greetings: [Hello!, Good day.]`",
    "tags": "a list of words, e.g. `tags: [novel, classic]`",
    "example_dialogue": "a list of exchanges, each `- user: …` with `reply: …` under it",
    "voice": "a mapping from engine to voice, e.g. `voice: {edge: zh-CN-XiaoyiNeural}`",
    "extensions": "a mapping",
}


def validate_card(data: Any, path: Path, character_id: str) -> Card:
    """A Card from a card.yaml's parsed content, or CharacterError naming the file and the bad field.

    A bad card never becomes a wrong one: `aliases: 黛玉` (a text, not a list) would otherwise be split
    into single characters.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single {type(data).__name__}"
        raise CharacterError(f"The card {path} is {kind}, not a mapping of fields (`name: …`, `persona: …`); "
                             "fix the file. The other characters still work.")
    known = set(Card.__dataclass_fields__)
    # An empty `greeting:` is null in YAML: the field's default, not an error.
    data = {str(k): v for k, v in data.items() if str(k) in known and v is not None}
    data["id"] = character_id
    if data.get("name") in (None, ""):
        data["name"] = character_id
    try:
        return _VALIDATE.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0]) if err["loc"] else where
        shape = _SHAPES.get(top, "a text")
        raise CharacterError(f"The card {path} has a bad '{where}': it must be {shape} "
                             f"({err['msg'].lower()}); fix the file. The other characters still work.") from exc


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CharacterError(f"The card {path} is not valid YAML ({exc}); fix or delete it.") from exc
    return validate_card(data, path, folder.name)


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


def _scan() -> tuple[list[Card], list[str]]:
    seen: dict[str, Card] = {}
    problems: dict[str, str] = {}
    for root in (paths().knowledge, BUNDLED.knowledge):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            name = folder.name
            if name in seen or name in problems or name.startswith(".") or not (folder / CARD_FILE).is_file():
                continue
            try:
                seen[name] = load_card(name)
            except CharacterError as exc:  # a broken card must not hide the others
                problems[name] = str(exc)
    return list(seen.values()), list(problems.values())


def list_characters() -> list[Card]:
    """Every character with a valid card, home ones shadowing bundled ones of the same id."""
    cards, problems = _scan()
    for problem in problems:
        log.warning(problem)
    return cards


def card_problems() -> list[str]:
    """A sentence for each character whose card cannot be read (naming the file and the field)."""
    return _scan()[1]


def texts_dir(character_id: str) -> Path:
    return character_dir(character_id) / TEXTS_DIR


def has_books(character_id: str) -> bool:
    """Whether any text was given to this character (a card imported alone has none)."""
    folder = texts_dir(character_id)
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*"))


def load_lorebook(character_id: str) -> dict | None:
    """The character's lorebook (a card's ``character_book``), or None when she has none."""
    path = character_dir(character_id) / LOREBOOK_FILE
    if not path.is_file():
        return None
    try:
        book = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CharacterError(f"The lorebook {path} is not valid JSON ({exc}); fix or delete it.") from exc
    if not isinstance(book, dict):
        raise CharacterError(f"The lorebook {path} is not a lorebook object; fix or delete it.")
    return book


def avatar_path(card: Card) -> Path | None:
    """The portrait file of a character, if it exists."""
    if not card.avatar:
        return None
    for base in (character_dir(card.id), paths().avatars, BUNDLED.avatars):
        candidate = base / card.avatar
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``list``, ``import`` a community character card, ``export`` a character as one."""
    p = argparse.ArgumentParser(prog="characters.py", description="Zhiyin's characters and character cards.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every character, and the cards that cannot be read")
    imp = sub.add_parser("import", help="a character card (.png, .json, .charx; V1, V2 or V3) as a new character")
    imp.add_argument("path")
    imp.add_argument("--id", help="the new character's id (default: from the card's name)")
    exp = sub.add_parser("export", help="a character as a V3 card (a PNG also carries the V2 backfill)")
    exp.add_argument("id")
    exp.add_argument("--out", required=True, help="FILE.png, FILE.json or FILE.charx")
    for sp in (ls, imp, exp):
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    try:
        if args.command == "list":
            cards, problems = _scan()
            result: dict[str, Any] = {"characters": [{"id": c.id, "name": c.name, "language": c.language}
                                                     for c in cards], "problems": problems}
            lines = [f"{c.id}\t{c.name}" for c in cards] + [f"cannot read: {x}" for x in problems]
        elif args.command == "import":
            from cards.transfer import import_path

            report = import_path(args.path, args.id)
            result, lines = report.to_dict(), report.lines()
        else:
            from cards.transfer import export_card

            report = export_card(args.id, Path(args.out))
            result, lines = report.to_dict(), report.lines()
    except CharacterError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, indent=1) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not __main__'s: cards/ raises the `characters` module's CharacterError.
    from characters import main as _main

    sys.exit(_main())
