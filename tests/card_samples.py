"""Character cards written by us from the specs (character-card-spec-v2's spec_v1.md/spec_v2.md,
character-card-spec-v3's SPEC_V3.md) for the card tests: real PNGs made with Pillow, real zips."""
from __future__ import annotations

import base64
import copy
import io
import json
import zipfile
import zlib
from pathlib import Path

from PIL import Image


def picture(size: tuple[int, int] = (64, 96), colour: tuple[int, int, int] = (200, 120, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def png_card(chunks: dict[str, str], image: bytes | None = None) -> bytes:
    """A PNG with the given tEXt chunks (keyword -> raw text), written by hand before IEND."""
    body = (image or picture())[:-12]  # drop IEND
    for key, text in chunks.items():
        data = key.encode("latin-1") + b"\0" + text.encode("latin-1")
        body += len(data).to_bytes(4, "big") + b"tEXt" + data + zlib.crc32(b"tEXt" + data).to_bytes(4, "big")
    return body + (0).to_bytes(4, "big") + b"IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")


def b64(obj: dict) -> str:
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8")).decode("ascii")


V1 = {
    "name": "Captain Mira",
    "description": "{{char}} commands the airship Kestrel. She distrusts <USER> at first.",
    "personality": "Dry, brave, fond of maps.",
    "scenario": "{{user}} has stowed away aboard the Kestrel.",
    "first_mes": "*{{Char}} lowers her spyglass.* Well, {{USER}}, you are a long way from the ground.",
    "mes_example": "<START>\n{{user}}: Where are we going?\n{{char}}: North, past the storm wall.\n"
                   "It is the only way home.\n<START>\n<USER>: Who are you?\n<BOT>: The captain. Sit down.",
    "talkativeness": "0.6",  # an unknown (SillyTavern) field: must survive
}


def lore_entry(**kw) -> dict:
    entry = {"keys": [], "content": "", "extensions": {}, "enabled": True, "insertion_order": 100,
             "use_regex": False}
    entry.update(kw)
    return entry


V2_BOOK = {
    "name": "Kestrel lore", "scan_depth": 2, "token_budget": 400, "recursive_scanning": False,
    "extensions": {"x_editor": {"v": 1}},
    "entries": [
        lore_entry(keys=["storm wall"], content="The storm wall is a ring of lightning around the north.",
                   insertion_order=20, priority=10, id=1, comment="storm"),
        lore_entry(keys=["Kestrel"], content="The Kestrel is a three-masted airship.", insertion_order=10,
                   id=2, extensions={"depth": 4, "x_custom": True}),
        lore_entry(keys=["map"], secondary_keys=["north"], selective=True,
                   content="Mira's best map was drawn by her mother.", insertion_order=30, id=3),
        lore_entry(keys=[], constant=True, content="Airships fly on lift-stone.", insertion_order=5, id=4),
        lore_entry(keys=["mutiny"], content="There was a mutiny last year.", enabled=False, id=5),
    ],
}


def v2_card() -> dict:
    data = {k: v for k, v in V1.items() if k != "talkativeness"}
    data.update(creator_notes="A sky-pirate captain.\nMore notes.", system_prompt="{{original}}\nStay in the sky.",
                post_history_instructions="Keep {{char}} terse. {{original}}",
                alternate_greetings=["*Mira points at the horizon.* Storm's coming, {{user}}."],
                character_book=V2_BOOK, tags=["adventure", "airship"], creator="us", character_version="1.2",
                extensions={"depth_prompt": {"prompt": "x", "depth": 4}, "fav": False, "x_unknown": [1, 2]},
                x_data_field="kept")
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data, "x_top_level": {"kept": True}}


def v3_card() -> dict:
    card = v2_card()
    card["spec"], card["spec_version"] = "chara_card_v3", "3.0"
    d = card["data"]
    d["name"], d["nickname"] = "Mira Vale", "Mira"
    d["character_book"] = copy.deepcopy(V2_BOOK)
    d["character_book"]["entries"] += [
        lore_entry(keys=["compass"], content="@@depth 0\n@@role system\nThe compass points to home.",
                   insertion_order=40, id=6),
        lore_entry(keys=[], constant=True, content="@@position after_desc\nMira is thirty-four.", id=7,
                   insertion_order=1),
        lore_entry(keys=["treasure"], content="@@activate_only_after 2\nThe treasure is a seed vault.", id=8),
        lore_entry(keys=["/\\bstars?\\b/i"], use_regex=True, content="Navigation by the stars.", id=9),
    ]
    d.update(assets=[{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
                     {"type": "background", "uri": "https://example.org/sky.png", "name": "main", "ext": "png"}],
             creator_notes_multilingual={"en": "A sky-pirate captain."}, source=["https://example.org/mira"],
             group_only_greetings=["Crew, gather round."], creation_date=1700000000, modification_date=1700000001)
    return card


def charx(card: dict, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("card.json", json.dumps(card))
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

def zipfile_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()
