"""Served beyond this machine without a password, the Settings and Knowledge pages change nothing;
the online voice is off unless the person turns it on, with a sentence saying where the text goes."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config

from tests.test_app import app_env, assert_clean, start, texts  # noqa: F401  (fixture)
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (fixture)


@pytest.fixture
def served_on_all_interfaces():
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", before)


def test_settings_are_read_only_on_a_public_address_without_a_password(app_env: Path,
                                                                        served_on_all_interfaces) -> None:
    at = start("Settings")
    assert_clean(at)
    assert any("read-only" in t for t in texts(at.info))
    assert at.button[0].disabled  # Apply
    at = start("Knowledge")
    assert_clean(at)
    assert any("read-only" in t for t in texts(at.info))
    assert all(b.disabled for b in at.button if b.label.startswith(("Add to", "Upgrade", "Create", "Import")))


def test_the_password_unlocks_the_settings(app_env: Path, served_on_all_interfaces, monkeypatch) -> None:
    monkeypatch.setenv("ZHIYIN_PASSWORD", "open sesame")
    at = start("Settings")
    assert at.button[0].disabled
    at.text_input(key="password").set_value("open sesame").run()
    assert_clean(at)
    assert not at.button[0].disabled


def test_online_voice_is_off_by_default_and_says_where_the_text_goes(app_env: Path) -> None:
    at = start("Settings")
    assert at.toggle(key="set_online_voice").value is False
    at.toggle(key="set_online_voice").set_value(True).run()
    assert any("sent to Microsoft" in c for c in texts(at.caption))
    at.button[0].click().run()
    assert at.session_state["overrides"]["online_voice"] is True


def test_an_imported_card_chats_without_a_book_and_the_page_names_the_lore_that_fired(app_env: Path) -> None:
    from cards.transfer import import_card
    from tests.card_samples import b64, png_card, v2_card

    cid = import_card(png_card({"chara": b64(v2_card())}), "mira.png").card.id
    at = start()
    at.selectbox(key="character").set_value(cid).run()
    at.radio(key="mode").set_value("roleplay").run()
    assert_clean(at)
    at.chat_input[0].set_value("Are we flying to the storm wall?").run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    notes = " ".join(texts(at.caption))
    assert "World info:" in notes and "storm" in notes, notes



def test_a_cards_alternate_greetings_are_offered_as_choices(app_env: Path) -> None:
    from cards.transfer import import_card
    from tests.card_samples import b64, png_card, v2_card

    cid = import_card(png_card({"chara": b64(v2_card())}), "mira.png").card.id
    at = start()
    at.selectbox(key="character").set_value(cid).run()
    assert "spyglass" in at.chat_message[0].markdown[0].value
    at.selectbox(key=f"greeting-{cid}").set_value(1).run()
    assert_clean(at)
    assert "Storm's coming" in at.chat_message[0].markdown[0].value
