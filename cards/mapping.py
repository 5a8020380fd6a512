"""A character card's fields <-> Zhiyin's Card (pure: no files; cards/transfer.py reads and writes them).

The card's text becomes her persona (description), speaking style (personality), scenario, greetings
(first_mes, alternate_greetings), example exchanges (mes_example), system prompt and post-history
instructions. Macros are resolved (``{{char}}`` -> her name, ``{{user}}`` -> the prompt's word for the
visitor); going back, a field's original text is written whenever Zhiyin's copy is still what was made
of it, so unchanged fields come back exactly as the card had them.

What has no place in the spec (aliases, source work, language, voices, the one-line description, her
books' file names) goes under ``extensions.zhiyin``.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from cards import spec
from characters import Card

NS = "zhiyin"  # our key in extensions (V2: namespace what you store there)
ZHIYIN_FIELDS = ("language", "aliases", "source_work", "description", "voice", "era")  # era: persona branch
# Zhiyin's field <-> the card's field, for fields whose text the import resolves (export restores it).
TEXT_FIELDS = {"persona": "description", "speaking_style": "personality", "scenario": "scenario",
               "greeting": "first_mes", "system_prompt": "system_prompt",
               "post_history_instructions": "post_history_instructions"}


# ----------------------------------------------------------------------------- card -> Zhiyin
def _lang(data: dict) -> str:
    text = " ".join(str(data.get(k, "")) for k in ("name", "description", "first_mes"))
    han = len(re.findall(r"[\u4e00-\u9fff]", text))
    letters = len(re.findall(r"[A-Za-z]", text))
    return "zh" if han and han * 3 >= letters else "en"


def _caption(data: dict, text: str) -> str:
    """A one-line description for the character picker: the creator's note, else the description's start."""
    for line in re.sub(r"<[^>]+>", " ", data.get("creator_notes", "")).splitlines():
        line = " ".join(line.strip(" #*>_-").split())
        if line:
            return line[:160]
    first = re.split(r"(?<=[.!?。！？])\s*", " ".join(text.split()), maxsplit=1)[0]
    return first[:160] or str(data.get("name", ""))


def parse_examples(text: str, char_names: list[str], user_names: list[str]) -> list[dict[str, str]]:
    """``mes_example`` (``<START>`` blocks of ``Name: line``) as Zhiyin's [{user, reply}] exchanges."""
    names = sorted({n for n in (*char_names, *user_names) if n}, key=len, reverse=True)
    speaker = re.compile(r"^\s*(" + "|".join(map(re.escape, names)) + r")\s*[:：]\s?(.*)$", re.I)
    users = {n.casefold() for n in user_names}
    pairs: list[dict[str, str]] = []
    for block in re.split(r"<start>", text, flags=re.I):
        msgs: list[list[str]] = []
        for line in block.splitlines():
            m = speaker.match(line)
            if m:
                msgs.append(["user" if m.group(1).casefold() in users else "reply", m.group(2)])
            elif msgs:
                msgs[-1][1] += "\n" + line
        pending = ""
        for who, said in msgs:
            said = said.strip()
            if who == "user":
                pending = said if not pending else pending + "\n" + said
            else:
                pairs.append({"user": pending, "reply": said})
                pending = ""
    return pairs


def format_examples(pairs: list[dict[str, str]]) -> str:
    """Zhiyin's exchanges as ``mes_example`` with the spec's ``<START>`` separators and macros."""
    blocks = []
    for ex in pairs:
        lines = ["<START>"] + ([f"{{{{user}}}}: {ex['user']}"] if ex.get("user") else [])
        blocks.append("\n".join([*lines, f"{{{{char}}}}: {ex.get('reply', '')}"]))
    return "\n".join(blocks)


def card_from_v3(v3: dict, character_id: str) -> Card:
    """Zhiyin's Card for a V3-shaped card (``spec.to_v3``), macros resolved."""
    data = v3["data"]
    ours = data["extensions"].get(NS) if isinstance(data["extensions"].get(NS), dict) else {}
    char = spec.char_name(data)
    lang = ours["language"] if ours.get("language") in ("zh", "en") else _lang(data)
    user = spec.USER_NAME[lang]

    def r(text: str) -> str:
        return spec.resolve(text, char, user).strip()

    name = str(data["name"]).strip()
    nick = str(data.get("nickname") or "").strip()
    aliases = ours.get("aliases") if isinstance(ours.get("aliases"), list) else [nick] if nick and nick != name else []
    card = Card(
        id=character_id, name=name, language=lang, aliases=[str(a) for a in aliases],
        source_work=str(ours.get("source_work") or ""), era=str(ours.get("era") or ""),
        description=str(ours.get("description") or "") or _caption(data, r(data["description"])),
        example_dialogue=parse_examples(r(data["mes_example"]), [name, nick, char], [user, "user", "you"]),
        voice={str(k): str(v) for k, v in ours["voice"].items()} if isinstance(ours.get("voice"), dict) else {},
        greetings=[r(g) for g in data["alternate_greetings"]], creator_notes=data["creator_notes"],
        tags=list(data["tags"]), extensions={k: v for k, v in data["extensions"].items() if k != NS},
    )
    for ours_field, theirs in TEXT_FIELDS.items():
        setattr(card, ours_field, r(data[theirs]))
    return card


# ----------------------------------------------------------------------------- Zhiyin -> card
def v3_from_card(card: Card, source: dict | None, book: dict | None, books: list[str], now: int) -> dict:
    """A V3 card for ``card``: ``source`` (the imported card, V3-shaped) with Zhiyin's changes applied."""
    v3 = copy.deepcopy(source) if source else {"spec": spec.SPEC_V3, "spec_version": "3.0", "data": {}}
    v3["spec"], v3["spec_version"] = spec.SPEC_V3, "3.0"
    data = v3["data"]
    was = card_from_v3(source, card.id) if source else None

    def put(key: str, ours_field: str, value: Any) -> None:
        if was is None or getattr(was, ours_field) != getattr(card, ours_field) or key not in data:
            data[key] = value

    put("name", "name", card.name)
    for ours_field, theirs in TEXT_FIELDS.items():
        put(theirs, ours_field, getattr(card, ours_field))
    put("mes_example", "example_dialogue", format_examples(card.example_dialogue))
    put("alternate_greetings", "greetings", list(card.greetings))
    put("creator_notes", "creator_notes", card.creator_notes)
    put("tags", "tags", list(card.tags))
    for key, default in (("creator", ""), ("character_version", ""), ("group_only_greetings", [])):
        data.setdefault(key, default)
    ext = copy.deepcopy(card.extensions)
    old = data.get("extensions", {}).get(NS) if isinstance(data.get("extensions"), dict) else None
    ours = dict(old) if isinstance(old, dict) else {}
    for f in ZHIYIN_FIELDS:
        if was is None or getattr(was, f) != getattr(card, f):
            ours[f] = copy.deepcopy(getattr(card, f))
    if books:
        ours["books"] = books
    if ours:
        ext[NS] = ours
    data["extensions"] = ext
    if book is not None:
        data["character_book"] = copy.deepcopy(book)
    else:
        data.pop("character_book", None)
    if not source:
        data["creation_date"] = now
    data["modification_date"] = now
    return v3
