"""The settings table of docs/configuration.md is the one generated from the Settings model, and
every setting is described there and in .env.example."""

import re
from pathlib import Path

import pytest
from pydantic import Field

import common.settings_doc as generator
from common.settings import ENV_PREFIX, SECRET_SETTINGS, Settings
from common.settings_doc import BEGIN, END, PAGE, default_text, settings_table, with_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_holds_the_generated_table():
    page = PAGE.read_text(encoding="utf-8")
    assert with_table(page, settings_table()) == page, (
        "docs/configuration.md's settings table differs from common/settings.py: run `make docs`"
    )


def test_every_setting_has_a_description_and_every_secret_says_so():
    undescribed = [name for name, info in Settings.model_fields.items() if not info.description]
    assert undescribed == []
    unmarked = [
        name for name in SECRET_SETTINGS if "[secret" not in Settings.model_fields[name].description
    ]
    assert unmarked == []


def test_every_setting_has_its_row_and_every_secret_its_file_form():
    table = settings_table()
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in table
    for name in SECRET_SETTINGS:
        assert f"`{ENV_PREFIX}{name.upper()}_FILE`" in table


def test_a_documented_default_wins_over_the_literal_one():
    assert default_text(Field(None, json_schema_extra={"doc_default": "required"})) == "required"
    assert default_text(Field(None)) == "none"
    assert default_text(Field(25.0)) == "`25`"
    assert default_text(Field(False)) == "`false`"
    assert default_text(Field("")) == "empty"


def test_a_pipe_in_a_description_does_not_split_its_row(monkeypatch):
    class Piped(Settings):
        piped: str = Field("a", description="`x` | `y`")

    monkeypatch.setattr(generator, "Settings", Piped)
    row = next(line for line in settings_table().splitlines() if "PIPED" in line)
    assert len(re.split(r"(?<!\\)\|", row)) == 5


def test_a_setting_without_a_description_stops_the_generator(monkeypatch):
    class Undescribed(Settings):
        undescribed: str = "a"

    monkeypatch.setattr(generator, "Settings", Undescribed)
    with pytest.raises(ValueError, match="PWASYNC_UNDESCRIBED has no description"):
        settings_table()


def test_the_table_is_replaced_between_the_markers_only():
    page = f"intro\n{BEGIN}\nold\n{END}\nafter\n"
    assert with_table(page, "new") == f"intro\n{BEGIN}\nnew\n{END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        with_table("no markers here", "new")


def test_every_setting_appears_in_the_example_env():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    missing = [
        ENV_PREFIX + name.upper()
        for name in Settings.model_fields
        if not re.search(rf"^#? ?{ENV_PREFIX}{name.upper()}=", example, re.MULTILINE)
    ]
    assert missing == []
