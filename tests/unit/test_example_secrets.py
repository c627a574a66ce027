"""The example deployment files hold no credential anyone could run with (security 9)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _settings_after_secret_markers(text: str) -> dict[str, str]:
    """NAME=value lines that follow a ``# [secret]`` comment (commented-out ones excluded)."""
    found, marked = {}, False
    for line in text.splitlines():
        if re.match(r"#\s*[A-Z_]+=", line):  # a setting left commented out
            marked = False
        elif line.startswith("#"):
            marked = marked or "[secret" in line
            continue
        if "=" in line and marked:
            name, value = line.split("=", 1)
            found[name] = value
        marked = False
    return found


def test_every_secret_in_the_example_env_is_empty():
    secrets = _settings_after_secret_markers((ROOT / ".env.example").read_text())
    assert {"RABBITMQ_PASSWORD", "REDIS_PASSWORD", "PWASYNC_GRAPH_CLIENT_SECRET"} <= set(secrets)
    assert "PWASYNC_SECRET_KEY" in secrets
    assert {name: value for name, value in secrets.items() if value} == {}


def test_compose_requires_the_broker_and_redis_passwords_and_knows_no_default_ones():
    compose = (ROOT / "compose.yaml").read_text()
    for name in ("RABBITMQ_USER", "RABBITMQ_PASSWORD", "REDIS_PASSWORD"):
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", compose)
        assert uses and all(use.startswith(":?") for use in uses), (name, uses)
    settings = [
        line for line in (ROOT / ".env.example").read_text().splitlines() if re.match("[A-Z]", line)
    ]
    assert "guest" not in compose and not any("guest" in line for line in settings)
