"""Character cards (cards/): V1/V2/V3 as JSON, PNG and CHARX in and out, round trips, every bad input,
the CLI, the Knowledge page's import, and card.yaml validation (characters.py).

The cards are written by us from the specs (tests/card_samples.py); the real import and export write
into a temporary ZHIYIN_HOME.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import characters
from cards import codec, lorebook, spec
from cards.spec import CardError
from cards.transfer import export_bytes, export_card, import_card, import_path
from characters import CharacterError, card_problems, list_characters, load_card, load_lorebook
from settings import BUNDLED
from tests.card_samples import (
    V1,
    V2_BOOK,
    b64,
    charx,
    picture,
    png_card,
    tree,
    v2_card,
    v3_card,
    zipfile_bytes,
)


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


def test_an_edited_field_is_exported_and_the_others_stay_as_the_card_had_them(zhiyin_home: Path) -> None:
    import_card(json.dumps(v2_card()).encode(), "mira.json")
    card = load_card("Captain-Mira")
    card.persona, card.aliases = "A new description of {{char}}.", ["Cap"]
    characters.save_card(card)
    out = json.loads(export_bytes("Captain-Mira", "json")[0])["data"]
    assert out["description"] == "A new description of {{char}}."
    assert out["scenario"] == v2_card()["data"]["scenario"] and out["mes_example"] == V1["mes_example"]
    assert out["extensions"]["zhiyin"] == {"aliases": ["Cap"]}  # only what the card could not say
    assert {k: v for k, v in out["extensions"].items() if k != "zhiyin"} == v2_card()["data"]["extensions"]


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


# ------------------------------------------------------------------------------------ bad input
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


def test_ids_from_awkward_names(zhiyin_home: Path) -> None:
    def named(name: str) -> bytes:
        card = v2_card()
        card["data"]["name"] = name
        return json.dumps(card).encode()

    assert import_card(named("Mira/Vale ✨ v1.2"), "a.json").card.id == "Mira-Vale-v1-2"
    assert len(import_card(named("The " + "Very " * 30 + "Long"), "b.json").card.id) <= 64
    assert_refused(zhiyin_home, lambda: import_card(named("✨✨"), "c.json"), "--id")
    assert import_card(named("✨✨"), "c.json", "sparkles").card.name == "✨✨"


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
    plain = knowledge.import_card_upload("plain.json", json.dumps(V1).encode(), "plain")  # a V1 card has no book
    assert knowledge.lorebook_summary(plain.card) == "No lorebook."
    assert knowledge.lorebook_summary(load_card("daiyu")).startswith("Lorebook: 9 entries (0 always")  # her facts
