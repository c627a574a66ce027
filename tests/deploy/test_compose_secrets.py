"""compose.yaml gives each pwasync service only its own secrets, as files (NAME_FILE)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.errors import ConfigError
from common.settings import SECRET_SETTINGS, load_settings
from services.poller.sources import require_source

ROOT = Path(__file__).resolve().parents[2]
#: Secret file (compose `secrets:`) -> the setting it feeds. .env may hold these settings for
#: `pwasync` on the host; compose hands them out per service instead (the broker and Redis
#: URLs are built in compose.yaml for everyone). The poller has its own copy of the Graph
#: app's secret, so that the writers' file is never mounted in a poller.
SECRET_FILES = {
    "pwa_password": "pwa_password",
    "secret_key": "secret_key",
    "dataverse_client_secret": "dataverse_client_secret",
    "poller_graph_client_secret": "graph_client_secret",
    "graph_client_secret": "graph_client_secret",
    "receiver_secret": "receiver_secret",
}
POLLER = {"pwa_password", "secret_key", "dataverse_client_secret", "poller_graph_client_secret"}
NEEDS = {
    "poller": POLLER,
    "writer": {"graph_client_secret"},
    "ledger": set(),
    "receiver": {"receiver_secret"},
    # Operator commands: `check` signs in to both sides, `events register` needs the receiver's.
    "cli": set(SECRET_FILES) - {"poller_graph_client_secret"},
}
#: Per PWASYNC_SOURCE, the poller's files the README says to fill (and the settings beside).
POLLER_BY_SOURCE = [
    ("project", {"PWASYNC_PWA_AUTH": "oauth"}, {"secret_key"}),
    ("project", {"PWASYNC_PWA_AUTH": "sharepoint_online", "PWASYNC_PWA_USERNAME": "svc@contoso"},
     {"pwa_password"}),
    ("dataverse", {"PWASYNC_DATAVERSE_CLIENT_ID": "11111111-1111-1111-1111-111111111111"},
     {"dataverse_client_secret"}),
    ("dataverse", {}, {"poller_graph_client_secret"}),  # the Graph app signs in
    ("planner", {"PWASYNC_PLANNER_PLANS": "xqQg5FS2LkCp935s-FIFm2QAFkHM"},
     {"poller_graph_client_secret"}),
]  # fmt: skip
SITE = {
    "PWASYNC_PWA_URL": "https://contoso.sharepoint.com/sites/pwa",
    "PWASYNC_PWA_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
    "PWASYNC_TENANT_ID": "contoso.onmicrosoft.com",
    "PWASYNC_GRAPH_CLIENT_ID": "33333333-3333-3333-3333-333333333333",
    "PWASYNC_DATAVERSE_URL": "https://contoso.crm4.dynamics.com",
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # resolves the `<<` merges


def _variable(name: str) -> str:
    return "PWASYNC_" + SECRET_FILES[name].upper()


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_service_gets_only_its_secrets_and_as_files(service):
    compose = _compose()
    spec = compose["services"][service]
    environment = spec["environment"]
    assert set(spec.get("secrets", [])) == NEEDS[service]
    assert set(compose["secrets"]) == set(SECRET_FILES)
    for name in SECRET_FILES:
        assert compose["secrets"][name] == {"file": f"./secrets/{name}"}
        # Whatever .env holds never reaches a container as a plain variable.
        assert environment[_variable(name)] == "", name
    for name in NEEDS[service]:
        assert environment[_variable(name) + "_FILE"] == f"/run/secrets/{name}"
    # Nothing of one service's secrets is passed any other way either.
    assert {k for k in environment if k.endswith("_FILE")} == {
        _variable(n) + "_FILE" for n in NEEDS[service]
    }
    assert set(SECRET_SETTINGS) >= set(SECRET_FILES.values())


def test_no_poller_mounts_the_writers_graph_secret():
    # A Project poller holds no Graph credential; a Planner one holds its own copy.
    assert "graph_client_secret" not in _compose()["services"]["poller"]["secrets"]


def _poller_settings(tmp_path: Path, source: str, settings: dict, filled: set[str]):
    """The poller's settings as compose gives them, only ``filled`` files holding a value."""
    environment = _compose()["services"]["poller"]["environment"]
    # The broker and Redis URLs are ${...} templates here, and no source's concern.
    environ = {k: str(v) for k, v in environment.items() if not k.endswith("_URL")}
    environ.update(SITE, PWASYNC_SOURCE=source, **settings)
    for variable, path in list(environ.items()):
        if variable.endswith("_FILE"):
            name = Path(path).name
            (tmp_path / name).write_text("sample-value\n" if name in filled else "")
            environ[variable] = str(tmp_path / name)
    return load_settings(environ)


@pytest.mark.parametrize(("source", "settings", "filled"), POLLER_BY_SOURCE)
def test_the_poller_starts_with_the_files_its_source_needs_and_not_without(
    tmp_path, source, settings, filled
):
    require_source(_poller_settings(tmp_path, source, settings, filled))
    assert filled <= POLLER
    for name in filled:
        with pytest.raises(ConfigError, match=_variable(name)):
            require_source(_poller_settings(tmp_path, source, settings, filled - {name}))


def test_the_operator_cli_is_not_started_by_up():
    assert _compose()["services"]["cli"]["profiles"] == ["cli"]


def test_the_secret_files_are_kept_out_of_git():
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
