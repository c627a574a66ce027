"""The settings table of docs/configuration.md, generated from the ``Settings`` model.

Each field's ``description`` is its row's meaning; the default column is the model's default,
or ``json_schema_extra["doc_default"]`` where the literal default does not say it (a setting
required for one command, a default computed at run time). ``make docs`` (``python -m
common.settings_doc``) rewrites the table between the markers; a unit test fails when the page
and the model differ, so the table cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from common.settings import ENV_PREFIX, FILE_SUFFIX, SECRET_SETTINGS, Settings

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def default_text(info: FieldInfo) -> str:
    """The default column: the documented default if given, else the model's literal one."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "doc_default" in extra:
        return str(extra["doc_default"])
    value: Any = info.default
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "empty" if value == "" else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """The generated part of the page: the table, then the secrets that also take NAME_FILE."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if not info.description:
            raise ValueError(f"{variable(name)} has no description (Field(description=...))")
        row = (f"`{variable(name)}`", _cell(info.description), _cell(default_text(info)))
        lines.append("| " + " | ".join(row) + " |")
    files = ", ".join(f"`{variable(name)}{FILE_SUFFIX}`" for name in SECRET_SETTINGS)
    lines += ["", f"The secret settings, each of which may be given as a file instead: {files}."]
    return "\n".join(lines)


def with_table(page: str, table: str) -> str:
    """``page`` with the text between the markers replaced by ``table``."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{PAGE.name} has no {BEGIN} … {END} markers")
    return page[: start + len(BEGIN)] + "\n" + table + "\n" + page[end:]


def main() -> int:
    page = PAGE.read_text(encoding="utf-8")
    updated = with_table(page, settings_table())
    if updated != page:
        PAGE.write_text(updated, encoding="utf-8")
        print(f"{PAGE}: settings table regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
