"""compose.yaml gives each pwasync service only its own secrets, as files (NAME_FILE)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.settings import SECRET_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
#: Secret settings that .env may hold for `pwasync` on the host and that compose hands out
#: per service instead; the broker and Redis URLs are built in compose.yaml for everyone.
SERVICE_SECRETS = {"pwa_password", "secret_key", "graph_client_secret", "receiver_secret"}
NEEDS = {
    "poller": {"pwa_password", "secret_key"},
    "writer": {"graph_client_secret"},
    "ledger": set(),
    "receiver": {"receiver_secret"},
    # Operator commands: `check` signs in to both sides, `events register` needs the receiver's.
    "cli": SERVICE_SECRETS,
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # resolves the `<<` merges


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_service_gets_only_its_secrets_and_as_files(service):
    compose = _compose()
    spec = compose["services"][service]
    environment = spec["environment"]
    assert set(spec.get("secrets", [])) == NEEDS[service]
    for name in SERVICE_SECRETS:
        variable = "PWASYNC_" + name.upper()
        # Whatever .env holds never reaches a container as a plain variable.
        assert environment[variable] == "", variable
        if name in NEEDS[service]:
            assert environment[variable + "_FILE"] == f"/run/secrets/{name}"
            assert compose["secrets"][name] == {"file": f"./secrets/{name}"}
        else:
            assert variable + "_FILE" not in environment
    # Nothing of one service's secrets is passed any other way either.
    assert {k for k in environment if k.endswith("_FILE")} <= {
        f"PWASYNC_{n.upper()}_FILE" for n in NEEDS[service]
    }
    assert set(SECRET_SETTINGS) >= SERVICE_SECRETS


def test_the_operator_cli_is_not_started_by_up():
    assert _compose()["services"]["cli"]["profiles"] == ["cli"]


def test_the_secret_files_are_kept_out_of_git():
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
