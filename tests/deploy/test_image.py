"""What the production image holds: the services without the sandbox, and a license string."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from services.cli import EXIT_USAGE, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_context_lets_in_the_services_and_not_the_sandbox():
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert {"common", "services", "pyproject.toml"} <= allowed
    assert "sandbox" not in allowed and "tests" not in allowed


def test_without_the_sandbox_its_commands_say_how_to_get_it_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sandbox.server", None)  # as if it were not installed
    for command in (["sandbox"], ["demo"]):
        assert main(command) == EXIT_USAGE
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "pip install 'pwasync[sandbox]'" in error


def test_the_license_is_an_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "LicenseRef-Proprietary"
