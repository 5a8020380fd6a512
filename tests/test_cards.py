"""Character cards (cards/): V1/V2/V3 as JSON, PNG and CHARX in and out, lorebook activation, bad input,
and card.yaml validation (characters.py).

Every card here is written by us from the specs (character-card-spec-v2's spec_v1.md/spec_v2.md,
character-card-spec-v3's SPEC_V3.md): real PNGs made with Pillow, real zips, the real import and
export writing into a temporary ZHIYIN_HOME.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

import characters
from cards import codec, lorebook, prompting, spec
from cards.spec import CardError
from cards.transfer import export_bytes, export_card, import_card, import_path
from characters import CharacterError, card_problems, list_characters, load_card, load_lorebook
from settings import BUNDLED


# ------------------------------------------------------------------------------- cards we write
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
        lore_entry(keys=["/st(a|o)rs?/i"], use_regex=True, content="Navigation by the stars.", id=9),
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


# ------------------------------------------------------------------------------------- import
def test_v1_json_card_becomes_a_character_with_macros_resolved(zhiyin_home: Path) -> None:
    report = import_card(json.dumps(V1).encode(), "mira.json")
    card = load_card("Captain-Mira")
    assert (report.format, report.version, card.name, card.language) == ("json", 1, "Captain Mira", "en")
    assert card.persona == "Captain Mira commands the airship Kestrel. She distrusts Visitor at first."
    assert card.speaking_style == "Dry, brave, fond of maps."
    assert card.scenario == "Visitor has stowed away aboard the Kestrel."
    assert card.greeting == "*Captain Mira lowers her spyglass.* Well, Visitor, you are a long way from the ground."
    assert card.example_dialogue == [
        {"user": "Where are we going?", "reply": "North, past the storm wall.\nIt is the only way home."},
        {"user": "Who are you?", "reply": "The captain. Sit down."}]
    assert json.loads((report.folder / "card_source.json").read_text()) == V1


def test_v2_png_with_lorebook_keeps_the_book_and_the_image(zhiyin_home: Path) -> None:
    blob = png_card({"Chara": b64(v2_card())}, picture((80, 120)))  # keyword matched case-insensitively
    report = import_card(blob, "mira.png")
    card = load_card("Captain-Mira")
    assert report.version == 2 and report.lore_entries == 5 and report.portrait
    assert load_lorebook(card.id) == V2_BOOK  # kept exactly as the card has it
    assert characters.avatar_path(card) == report.folder / "avatar.png"
    assert Image.open(report.folder / "avatar.png").size == (80, 120)
    assert card.greetings == ["*Mira points at the horizon.* Storm's coming, Visitor."]
    assert card.system_prompt == "{{original}}\nStay in the sky."  # {{original}} kept for the prompt
    assert card.post_history_instructions == "Keep Captain Mira terse. {{original}}"
    assert card.creator_notes.startswith("A sky-pirate captain.") and card.description == "A sky-pirate captain."
    assert card.tags == ["adventure", "airship"]
    assert card.extensions == v2_card()["data"]["extensions"]


def test_png_with_both_chunks_reads_ccv3(zhiyin_home: Path) -> None:
    other = v2_card()
    other["data"]["name"] = "Wrong One"
    report = import_card(png_card({"chara": b64(other), "ccv3": b64(v3_card())}), "mira.png")
    assert report.version == 3 and report.card.name == "Mira Vale"
    assert report.card.aliases == ["Mira"]  # the nickname
    assert report.card.persona.startswith("Mira commands")  # V3: {{char}} is the nickname


def test_charx_icon_becomes_the_portrait_and_assets_are_kept(zhiyin_home: Path) -> None:
    card = v3_card()
    card["data"]["assets"] = [{"type": "icon", "uri": "embeded://assets/icon/images/mira.png", "name": "main",
                               "ext": "png"},
                              {"type": "emotion", "uri": "embeded://assets/emotion/images/happy.png",
                               "name": "happy", "ext": "png"}]
    happy = picture((10, 10), (0, 255, 0))
    blob = charx(card, {"assets/icon/images/mira.png": picture((50, 70)),
                        "assets/emotion/images/happy.png": happy, "x_app.json": b'{"a": 1}'})
    report = import_card(blob, "mira.charx")
    assert report.format == "charx" and report.portrait and report.assets == 3
    assert Image.open(report.folder / "avatar.png").size == (50, 70)
    out, _ = export_bytes(report.card.id, "charx")
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.read("assets/emotion/images/happy.png") == happy and zf.read("x_app.json") == b'{"a": 1}'
        again = json.loads(zf.read("card.json"))
    assert again["data"]["assets"] == card["data"]["assets"]


# ---------------------------------------------------------------------------------- round trips
def without_dates(card: dict) -> dict:
    card = copy.deepcopy(card)
    card["data"].pop("modification_date", None)
    return card


@pytest.mark.parametrize("fmt", ["png", "json"])
def test_import_then_export_gives_the_same_card_unknown_fields_untouched(zhiyin_home: Path, fmt: str) -> None:
    original = v3_card()
    import_card(png_card({"ccv3": b64(original)}), "mira.png")
    blob, report = export_bytes("Mira-Vale", fmt)
    exported = json.loads(blob) if fmt == "json" else json.loads(
        base64.b64decode(dict(codec.text_chunks(blob))["ccv3"]))
    assert without_dates(exported) == without_dates(original)
    assert exported["x_top_level"] == {"kept": True} and exported["data"]["x_data_field"] == "kept"
    assert exported["data"]["modification_date"] >= original["data"]["modification_date"]


def test_v1_card_exports_as_v3_with_its_texts_and_unknown_fields(zhiyin_home: Path) -> None:
    import_card(json.dumps(V1).encode(), "mira.json")
    out = json.loads(export_bytes("Captain-Mira", "json")[0])
    assert out["spec"] == "chara_card_v3" and out["talkativeness"] == "0.6"
    assert {k: out["data"][k] for k in spec.V1_FIELDS} == {k: V1[k] for k in spec.V1_FIELDS}


def test_png_export_carries_a_v2_backfill_without_decorators(zhiyin_home: Path) -> None:
    import_card(png_card({"ccv3": b64(v3_card())}), "mira.png")
    blob, _ = export_bytes("Mira-Vale", "png")
    chunks = dict(codec.text_chunks(blob))
    v2 = json.loads(base64.b64decode(chunks["chara"]))
    assert v2["spec"] == "chara_card_v2" and v2["spec_version"] == "2.0"
    assert v2["data"]["creator_notes"].startswith(spec.BACKFILL_NOTE)
    contents = [e["content"] for e in v2["data"]["character_book"]["entries"]]
    assert "The compass points to home." in contents and not any("@@" in c for c in contents)
    assert "assets" not in v2["data"] and "nickname" not in v2["data"]
    # A V2-only reader sees the backfill; importing that alone trims the note again.
    import_card(png_card({"chara": chunks["chara"]}), "v2only.png", "v2only")
    assert load_card("v2only").creator_notes == v3_card()["data"]["creator_notes"]


@pytest.mark.parametrize("fmt", ["png", "json", "charx"])
def test_builtin_character_exports_and_imports_as_the_same_card_and_prompt(zhiyin_home: Path, fmt: str,
                                                                          tmp_path: Path) -> None:
    from ragchat import MODES, Budget, system_prompt

    out = tmp_path / f"daiyu.{fmt}"
    export_card("daiyu", out)
    report = import_path(out, "daiyu2")
    before, after = load_card("daiyu"), load_card("daiyu2")
    fields = {k for k in before.__dataclass_fields__} - {"id", "avatar"}
    assert {k: getattr(after, k) for k in fields} == {k: getattr(before, k) for k in fields}
    for mode in MODES.names():
        assert system_prompt(after, MODES.create(mode), Budget()) == system_prompt(before, MODES.create(mode), Budget())
    assert report.portrait == (fmt != "json")
    if fmt == "png":  # her portrait is the card's image
        assert Image.open(out).size == Image.open(characters.avatar_path(before)).size
    card = json.loads(out.read_text()) if fmt == "json" else None
    if card:
        ours = card["data"]["extensions"]["zhiyin"]
        assert ours["aliases"][0] == "黛玉" and ours["source_work"].startswith("红楼梦") and ours["books"] == ["notes.md"]
        assert ours["voice"]["edge"] == "zh-CN-XiaoyiNeural" and "creation_date" in card["data"]


def test_export_of_a_character_without_portrait_uses_a_placeholder(zhiyin_home: Path, tmp_path: Path) -> None:
    characters.save_card(characters.Card(id="plain", name="Plain Jane", language="en", persona="Quiet."))
    export_card("plain", tmp_path / "plain.png")
    with Image.open(tmp_path / "plain.png") as img:
        assert img.size == (400, 600)
    assert import_path(tmp_path / "plain.png", "plain2").card.persona == "Quiet."


def test_round_trip_keeps_the_lorebook_behaviour(zhiyin_home: Path) -> None:
    import_card(png_card({"ccv3": b64(v3_card())}), "mira.png")
    blob, _ = export_bytes("Mira-Vale", "png")
    import_card(blob, "again.png", "mira2")
    convo = ["Tell me about the Kestrel.", "It flies.", "Is there treasure past the storm wall? Look at the STARS"]
    for turns in (0, 3):
        a = [f.to_dict() for f in lorebook.activate(load_lorebook("Mira-Vale"), convo, 500, len,
                                                   lorebook.Scan("Mira", "Visitor", turns))]
        b = [f.to_dict() for f in lorebook.activate(load_lorebook("mira2"), convo, 500, len,
                                                   lorebook.Scan("Mira", "Visitor", turns))]
        assert a == b and a
