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
from langchain_core.callbacks import BaseCallbackHandler
from PIL import Image

import characters
import llm
from cards import codec, lorebook, spec, worldinfo
from cards.spec import CardError
from cards.transfer import export_bytes, export_card, import_card, import_path
from characters import CharacterError, card_problems, list_characters, load_card, load_lorebook
from settings import BUNDLED, load_settings
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)


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


# ---------------------------------------------------------------------------------- activation
def fired(book: dict, recent: list[str], budget: int | None = None, **scan) -> list[str]:
    """The contents that fire, in prompt order (token count: one per character, to make budgets exact)."""
    return [f.text for f in lorebook.activate(book, recent, budget, len, lorebook.Scan(**scan))]


def book(*entries: dict, **kw) -> dict:
    return {"entries": list(entries), "extensions": {}, **kw}


def test_keys_match_case_insensitively_unless_case_sensitive() -> None:
    b = book(lore_entry(keys=["Kestrel"], content="A"), lore_entry(keys=["Kestrel"], content="B", case_sensitive=True))
    assert fired(b, ["the KESTREL flies"]) == ["A"]
    assert fired(b, ["the Kestrel flies"]) == ["A", "B"]


def test_constant_disabled_and_empty_entries() -> None:
    b = book(lore_entry(constant=True, content="always"), lore_entry(keys=["x"], content="off", enabled=False),
             lore_entry(keys=["x"], content=""))
    assert fired(b, ["x"]) == ["always"]


def test_selective_entries_need_a_secondary_key_too() -> None:
    b = book(lore_entry(keys=["map"], secondary_keys=["north", "south"], selective=True, content="S"),
             lore_entry(keys=["map"], secondary_keys=["north"], selective=False, content="N"),
             lore_entry(keys=["map"], secondary_keys=["north"], selective=True, content="NOT ANY",
                        extensions={"selectiveLogic": 2}))
    assert fired(b, ["a map"]) == ["N", "NOT ANY"]
    assert fired(b, ["a map of the North"]) == ["S", "N"]


def test_only_the_last_scan_depth_messages_are_scanned() -> None:
    b = book(lore_entry(keys=["storm"], content="S"), scan_depth=2)
    assert fired(b, ["storm?", "no", "yes"]) == []
    assert fired(b, ["storm?", "no"]) == ["S"]
    assert fired(book(lore_entry(keys=["storm"], content="S"), scan_depth=0), ["storm"]) == []
    deep = book(lore_entry(keys=["storm"], content="@@scan_depth 3\nS"), scan_depth=1)
    assert fired(deep, ["storm?", "no", "yes"]) == ["S"]  # @@scan_depth overrides the book's


def test_order_is_insertion_order_and_the_budget_cuts_the_lowest_priority() -> None:
    b = book(lore_entry(keys=["a"], content="AAAA", insertion_order=3, priority=1),
             lore_entry(keys=["a"], content="BBBB", insertion_order=1, priority=5),
             lore_entry(keys=["a"], content="CCCC", insertion_order=2, priority=3))
    assert fired(b, ["a"]) == ["BBBB", "CCCC", "AAAA"]
    assert fired(b, ["a"], budget=8) == ["BBBB", "CCCC"]
    assert fired({**b, "token_budget": 4}, ["a"], budget=100) == ["BBBB"]  # the smaller budget wins
    # Without priority, the lowest insertion_order goes first (V3).
    nop = book(lore_entry(keys=["a"], content="LOW", insertion_order=1), lore_entry(keys=["a"], content="HIGH",
                                                                                   insertion_order=9))
    assert fired(nop, ["a"], budget=4) == ["HIGH"]


def test_regex_keys_and_invalid_patterns() -> None:
    b = book(lore_entry(keys=["/st(a|o)rs?/"], use_regex=True, content="R"),
             lore_entry(keys=["(unclosed"], use_regex=True, content="BAD"),
             lore_entry(keys=["^Hello$"], use_regex=True, case_sensitive=True, content="CS"),
             lore_entry(keys=["x"], use_regex=True, constant=True, content="C"))  # constant ignored with regex
    assert fired(b, ["Look at the STARS", "(unclosed"]) == ["R"]
    assert fired(b, ["hello"]) == [] and fired(b, ["Hello"]) == ["CS"]


def test_macros_in_keys_and_content_are_resolved() -> None:
    b = book(lore_entry(keys=["{{char}}'s ship"], content="{{char}} owns it; {{user}} does not."))
    assert fired(b, ["Is this Mira's ship?"], char="Mira", user="Visitor") == ["Mira owns it; Visitor does not."]


def test_decorators_activate_only_after_every_and_switches() -> None:
    b = book(lore_entry(keys=["gold"], content="@@activate_only_after 2\nAFTER"),
             lore_entry(keys=["gold"], content="@@activate_only_every 2\nEVERY"),
             lore_entry(keys=["zzz"], content="@@activate\nALWAYS"),
             lore_entry(constant=True, content="@@dont_activate\nNEVER"),
             lore_entry(keys=["gold"], content="@@exclude_keys silver, copper\nEXCL"),
             lore_entry(keys=["gold"], content="@@additional_keys coin\nADD"),
             lore_entry(keys=["gold"], content="@@is_greeting 1\nGREET1"))
    assert fired(b, ["gold"], char_messages=1) == ["ALWAYS", "EXCL"]
    assert fired(b, ["gold coin and silver"], char_messages=2, greeting=1) == ["AFTER", "EVERY", "ALWAYS", "ADD",
                                                                               "GREET1"]


def test_decorators_are_trimmed_and_fallbacks_used_when_unknown() -> None:
    decorators, text = lorebook.parse_decorators("@@risu_only 3\n@@@activate_only_after 4\n@@depth 0\n\nBody\n")
    assert decorators == {"activate_only_after": ["4"], "depth": ["0"]} and text == "Body"
    decorators, _ = lorebook.parse_decorators("@@activate_only_after 1\n@@@activate_only_after 9\nx")
    assert decorators == {"activate_only_after": ["1"]}  # a known decorator: its fallback is not used


def test_match_history_decorators() -> None:
    b = book(lore_entry(keys=["x"], content="@@keep_activate_after_match\nKEEP"),
             lore_entry(keys=["x"], content="@@dont_activate_after_match\nONCE"))
    assert fired(b, ["x"]) == ["KEEP", "ONCE"]
    assert fired(b, ["nothing"], fired_before={0, 1}) == ["KEEP"]


def test_recursive_scanning_only_when_the_book_asks() -> None:
    entries = [lore_entry(keys=["ship"], content="The ship carries a compass."),
               lore_entry(keys=["compass"], content="The compass points home.")]
    assert fired(book(*entries), ["the ship"]) == ["The ship carries a compass."]
    assert len(fired(book(*entries, recursive_scanning=True), ["the ship"])) == 2


def test_world_info_puts_stable_entries_in_the_head_and_the_rest_in_the_turn_once() -> None:
    b = book(lore_entry(constant=True, content="Airships fly on lift-stone.", position="after_char"),
             lore_entry(keys=["storm"], content="The storm wall rings the north."),
             lore_entry(keys=["compass"], content="@@depth 0\nThe compass points home."),
             lore_entry(constant=True, content="@@activate_only_after 2\nLate constant."))
    wi = worldinfo.WorldInfo(b, 1000, len, "Mira", "Visitor", "en")
    assert wi.head() == {"after_desc": "Airships fly on lift-stone."}
    t1 = wi.turn(["Tell me of the storm and the compass"], char_messages=1)
    assert t1.before == "[World info]\nThe storm wall rings the north." and t1.after == "The compass points home."
    assert [f.entry.index for f in t1.fired] == [0, 1, 2] and t1.rendered == [1, 2]
    t2 = wi.turn(["Tell me of the storm and the compass", "...", "and the storm again?"], 2, present=t1.rendered)
    assert (t2.before, t2.after, t2.rendered) == ("[World info]\nLate constant.", "", [3])  # nothing repeated
    assert wi.head() == {"after_desc": "Airships fly on lift-stone."}  # the head never changes
    t3 = wi.turn(["What is for dinner?"], 3, present=[1, 2, 3])
    assert (t3.before, t3.after, t3.rendered) == ("", "", [])


def test_card_prompts_replace_ours_with_original_as_a_placeholder() -> None:
    assert spec.with_original("", "OURS") == "OURS"
    assert spec.with_original("Theirs only.", "OURS") == "Theirs only."
    assert spec.with_original("{{ORIGINAL}}\nAnd more.", "OURS") == "OURS\nAnd more."


def test_macros_are_case_insensitive() -> None:
    text = "{{char}} {{CHAR}} <BOT> <bot> <char> {{user}} {{User}} <USER> {{// a note}}end"
    assert spec.resolve(text, "Mira", "You") == "Mira Mira Mira Mira Mira You You You end"


# ------------------------------------------------------------------------------------ bad input
BAD_INPUT: dict[str, tuple[bytes, str]] = {}


def bad_inputs() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, a word the sentence must contain)."""
    truncated = b64(v2_card())
    return {
        "png without a card": ("plain.png", png_card({"Software": "Pillow"}), "without a character card"),
        "truncated base64": ("cut.png", png_card({"chara": truncated[:len(truncated) // 2 + 1]}), "damaged"),
        "truncated json": ("cut2.png", png_card({"chara": truncated[:len(truncated) // 2 // 4 * 4]}), "damaged"),
        "json list": ("list.json", b"[1, 2, 3]", "not a character card"),
        "json not a card": ("package.json", b'{"name": "left-pad", "version": "1.0"}', "not a character card"),
        "lorebook": ("book.json", json.dumps({"spec": "lorebook_v3", "data": V2_BOOK}).encode(), "lorebook"),
        "v2 without data": ("nodata.json", b'{"spec": "chara_card_v2"}', "damaged"),
        "not json": ("notes.txt", b"hello", "not a character card"),
        "png cut short": ("short.png", picture()[:40], "cut short"),
        "charx traversal": ("evil.charx", charx(v3_card(), {"../../evil.txt": b"x"}), "unsafe path"),
        "charx absolute": ("evil2.charx", charx(v3_card(), {"/tmp/evil.txt": b"x"}), "unsafe path"),
        "charx without card": ("nocard.charx", zipfile_bytes({"readme.txt": b"hi"}), "card.json"),
        "not a zip": ("broken.charx", b"PK\x03\x04garbage", "not a readable"),
    }


def zipfile_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def assert_refused(zhiyin_home: Path, call, word: str) -> str:
    """The call raises one sentence containing ``word`` and writes nothing anywhere under ZHIYIN_HOME."""
    before = tree(zhiyin_home)
    bundled = tree(BUNDLED.knowledge)
    with pytest.raises(CardError) as err:
        call()
    message = str(err.value)
    assert word in message and "\n" not in message and "Traceback" not in message
    assert tree(zhiyin_home) == before and tree(BUNDLED.knowledge) == bundled
    assert {c.id for c in list_characters()} >= {"daiyu", "elizabeth"}
    return message


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_is_one_sentence_and_writes_nothing(zhiyin_home: Path, case: str) -> None:
    name, blob, word = bad_inputs()[case]
    assert_refused(zhiyin_home, lambda: import_card(blob, name), word)


def test_a_50_mb_png_is_refused_without_reading_it_all(zhiyin_home: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.write(png_card({"chara": b64(v2_card())}))
        fh.truncate(50 * 1024 * 1024)
    message = assert_refused(zhiyin_home, lambda: import_path(big), "too large")
    assert "big.png" in message


def test_a_zip_bomb_is_refused(zhiyin_home: Path) -> None:
    bomb = zipfile_bytes({"card.json": json.dumps(v3_card()).encode(), "assets/other/x.bin": bytes(30 * 1024 * 1024)})
    assert len(bomb) < 100_000
    assert_refused(zhiyin_home, lambda: import_card(bomb, "bomb.charx"), "zip bomb")


def test_a_card_whose_name_is_an_existing_id_is_refused(zhiyin_home: Path) -> None:
    card = v2_card()
    card["data"]["name"] = "daiyu"
    message = assert_refused(zhiyin_home, lambda: import_card(json.dumps(card).encode(), "daiyu.json"), "already")
    assert "--id" in message
    import_card(json.dumps(card).encode(), "daiyu.json", "daiyu-card")  # with another id it imports
    assert load_card("daiyu").name == "林黛玉" and load_card("daiyu-card").name == "daiyu"


def test_a_successful_import_writes_only_the_new_folder(zhiyin_home: Path) -> None:
    before = set(tree(zhiyin_home))
    import_card(png_card({"ccv3": b64(v3_card())}), "mira.png")
    new = set(tree(zhiyin_home)) - before
    assert new and all(p.startswith("knowledge/Mira-Vale/") for p in new)


def test_export_errors_are_sentences(zhiyin_home: Path, tmp_path: Path) -> None:
    with pytest.raises(CardError, match="ending in .png, .json or .charx"):
        export_card("daiyu", tmp_path / "daiyu.webp")
    with pytest.raises(CardError, match="does not exist"):
        export_card("daiyu", tmp_path / "missing" / "daiyu.png")
    with pytest.raises(CharacterError, match="No character"):
        export_card("nobody", tmp_path / "x.png")


# ----------------------------------------------------------------------------------------- CLI
def test_cli_import_and_export_print_results_and_json(zhiyin_home: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "mira.png"
    path.write_bytes(png_card({"ccv3": b64(v3_card())}))
    assert characters.main(["import", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["id"], result["card_version"], result["lorebook_entries"]) == ("Mira-Vale", 3, 9)
    assert characters.main(["export", "Mira-Vale", "--out", str(tmp_path / "m.charx")]) == 0
    assert "Wrote" in capsys.readouterr().out and zipfile.is_zipfile(tmp_path / "m.charx")


def test_cli_errors_are_one_sentence_on_stderr_with_exit_code_2(zhiyin_home: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(picture())
    assert characters.main(["import", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: plain.png is a PNG image without")
    assert captured.err.count("\n") == 1


# ------------------------------------------------------------------------- card.yaml validation
def write_card(home: Path, cid: str, text: str) -> Path:
    folder = home / "knowledge" / cid
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(text, encoding="utf-8")
    return folder / "card.yaml"


@pytest.mark.parametrize("text, field", [
    ("- name: 黛玉\n- persona: x\n", "a list"),
    ("name: 宝钗\naliases: 黛玉\n", "'aliases'"),
    ("name: 宝钗\nexample_dialogue: [hello]\n", "'example_dialogue.0'"),
    ("name: 宝钗\nvoice: zh-CN-XiaoyiNeural\n", "'voice'"),
])
def test_a_malformed_card_is_a_sentence_naming_file_and_field_and_others_still_work(
        zhiyin_home: Path, text: str, field: str) -> None:
    path = write_card(zhiyin_home, "broken", text)
    with pytest.raises(CharacterError) as err:
        load_card("broken")
    assert str(path) in str(err.value) and field in str(err.value)
    assert {c.id for c in list_characters()} == {"daiyu", "elizabeth"}  # no crash, the others are listed
    assert [p for p in card_problems() if str(path) in p and field in p]


def test_a_valid_card_with_numbers_and_empty_fields_still_loads(zhiyin_home: Path) -> None:
    write_card(zhiyin_home, "ok", "name: 1984\ngreeting:\naliases: [Winston, 6079]\n")
    card = load_card("ok")
    assert (card.name, card.greeting, card.aliases) == ("1984", "", ["Winston", "6079"])
    assert card.names[0] == "Winston" and set(card.names) == {"Winston", "1984", "6079"}


# ------------------------------------------------------------------------------- in the prompt
SKY_BOOK = """Chapter 1

The Kestrel left the harbour at dawn with a crew of nine. Mira stood at the wheel and watched the clouds.

Chapter 2

Past the islands the wind turned cold, and the crew tied down the sails before the night came.
"""


class Recorder(BaseCallbackHandler):
    """Records the messages each chat-model call receives (LangChain's own callback, not a fake)."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        self.calls.append(list(messages[0]))


@pytest.fixture
def mira(zhiyin_home: Path, tmp_path: Path) -> str:
    """The V3 card imported, with a short book of her own built with the packaged USE embedder."""
    from knowledge_base.builder import build

    import_card(png_card({"ccv3": b64(v3_card())}), "mira.png")
    book = tmp_path / "in" / "sky.txt"
    book.parent.mkdir()
    book.write_text(SKY_BOOK, encoding="utf-8")
    build("Mira-Vale", [book], embedder="use")
    return "Mira-Vale"


@pytest.fixture
def tiny_llm(tiny_qwen_dir: Path):  # noqa: F811
    def make(recorder: Recorder | None = None):
        settings = load_settings(llm_backend="transformers", llm_model=str(tiny_qwen_dir), threads=2,
                                 temperature=0, max_tokens=4)
        return llm.get_chat_model(settings, callbacks=[recorder] if recorder else None)

    return make


def test_the_cards_prompts_scenario_and_world_info_take_their_places(mira: str, tiny_llm) -> None:
    from ragchat import Companion

    bot = Companion(mira, mode="roleplay", llm=tiny_llm())
    p = bot.prepare("Tell me about the Kestrel and the storm wall.")
    system, turn = p.messages[0].content, p.prompt
    persona = bot.card.persona
    # Head: the stable constants where their position says (default before the description), the
    # scenario, and the card's system prompt with {{original}} standing for the role-play rules.
    assert system.startswith("Airships fly on lift-stone.\n\n" + persona)
    assert system.index("Visitor has stowed away") < system.index("Mira is thirty-four.")
    assert system.endswith("Answer in two or three sentences.\nStay in the sky.")
    # The turn: the fired keyword entries first, in insertion order; post-history instructions last.
    assert turn.startswith("[World info]\nThe Kestrel is a three-masted airship.\n\nThe storm wall is a ring")
    assert "Keep Mira terse. (Answer" in turn.splitlines()[-1]
    assert {f["label"] for f in p.fired} >= {"storm", "entry 1"} and p.tokens["lore"] > 0
    assert "Navigation by the stars." not in system + turn and "seed vault" not in system + turn
    reader = Companion(mira, mode="reader", llm=tiny_llm()).prepare("Tell me about the Kestrel.")
    assert "Stay in the sky." not in reader.messages[0].content and "Keep Mira terse" not in reader.prompt


def test_a_turn_that_fires_nothing_new_keeps_the_whole_prefix(mira: str, tiny_llm) -> None:
    from events import Sources
    from ragchat import Companion

    rec = Recorder()
    bot = Companion(mira, mode="roleplay", llm=tiny_llm(rec))
    lore = []
    for q in ("Tell me about the Kestrel.", "And the Kestrel's crew?", "Is the storm wall far?"):
        lore.append([e for e in list(bot.turn(q)) if isinstance(e, Sources)][0].lore)
    first, second, third = rec.calls

    def extends(after: list, before: list) -> bool:
        """``after`` begins with ``before``'s messages (its last one is the answer's given start, "I")."""
        n = len(before) - 1
        return ([m.content for m in after[:n]] == [m.content for m in before[:n]]
                and after[n].content.startswith(before[n].content))

    assert len({c[0].content for c in rec.calls}) == 1  # the head never changes
    assert extends(second, first)
    assert "[World info]" in first[-2].content and "Kestrel is a three-masted" in first[-2].content
    # Turn 2 names the Kestrel again: it fires (and is listed) but is not written twice.
    assert "[World info]" not in second[-2].content and any("key 'Kestrel'" in x for x in lore[1])
    assert extends(third, second)
    assert third[-2].content.startswith("[World info]\nThe storm wall") and "Kestrel is a" not in third[-2].content
    assert bot.history[0].lore == [1] and bot.history[1].lore == [] and bot.history[2].lore == [0]


# ----------------------------------------------------------------------------------- the page
def test_knowledge_page_imports_a_card_and_names_a_broken_one(zhiyin_home: Path) -> None:
    from streamlit.testing.v1 import AppTest

    write_card(zhiyin_home, "broken", "name: 宝钗\naliases: 黛玉\n")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180)
    at.run()
    at.sidebar.radio(key="page").set_value("Knowledge").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("broken/card.yaml has a bad 'aliases'" in str(w.value) for w in at.warning)
    assert "broken" not in at.sidebar.selectbox(key="character").options  # the others still work
    at.file_uploader(key="card_file").set_value(("mira.png", png_card({"ccv3": b64(v3_card())}), "image/png")).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception and not at.error, [str(e.value) for e in at.error]
    assert at.sidebar.selectbox(key="character").value == "Mira-Vale"  # selected at once
    assert any("Imported Mira Vale" in str(s.value) for s in at.success)
    assert any("Lorebook: 9 entries (2 always" in str(c.value) for c in at.caption)
    at.file_uploader(key="card_file").set_value(("plain.png", picture(), "image/png")).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception and any("without a character card" in str(e.value) for e in at.error)


def test_import_card_upload_uses_the_given_id(zhiyin_home: Path) -> None:
    from ui import knowledge

    report = knowledge.import_card_upload("mira.json", json.dumps(v2_card()).encode(), " mira ")
    assert report.card.id == "mira" and knowledge.lorebook_summary(report.card).startswith("Lorebook: 5 entries (1")
    assert knowledge.lorebook_summary(load_card("daiyu")) == "No lorebook."
