"""What differs between the editions: settings file, site, ProjectData, the regional time zone
and SharePoint's health score; and how the launchers choose an edition."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from common.settings import load_settings
from sandbox.client import SandboxClient, read_env_file
from services.launcher import start_sandbox as launch
from tests.sandbox.conftest import RunningSandbox, TokenFactory
from tests.sandbox.windows_client import WindowsAuth

LIGHT = {"Accept": "application/json"}
VERBOSE = {"Accept": "application/json;odata=verbose"}


def _logged_on(sandbox: RunningSandbox) -> WindowsAuth:
    return WindowsAuth(sandbox.settings["PWASYNC_PWA_PASSWORD"])


def _env_file(sandbox: RunningSandbox) -> Path:
    return Path(sandbox.ca_file).with_name("sandbox.env")


# --- sandbox.env --------------------------------------------------------------------------


def test_the_se_settings_file(sandbox_se: RunningSandbox) -> None:
    settings = sandbox_se.settings
    assert settings["PWASYNC_PWA_URL"] == f"{sandbox_se.url}/pwa"
    assert settings["PWASYNC_PWA_AUTH"] == "sharepoint_onprem"
    assert settings["PWASYNC_PWA_USERNAME"] == "CONTOSO\\svc-pwasync"
    assert settings["PWASYNC_PWA_PASSWORD"] == "Sandbox-Svc-2026!"
    assert "PWASYNC_PWA_CLIENT_ID" not in settings
    assert settings["PWASYNC_PWA_TIMEZONE"] == "Europe/Berlin"
    for name in ("PWASYNC_TENANT_ID", "PWASYNC_GRAPH_CLIENT_ID", "PWASYNC_GRAPH_CLIENT_SECRET"):
        assert settings[name]
    assert settings["PWASYNC_AUTHORITY_HOST"] == settings["PWASYNC_SANDBOX_URL"] == sandbox_se.url
    # The backslash survives every reader of env files: ours, python-dotenv (pydantic-settings),
    # and compose/docker, which take unquoted values literally.
    path = _env_file(sandbox_se)
    assert read_env_file(path)["PWASYNC_PWA_USERNAME"] == "CONTOSO\\svc-pwasync"
    assert dotenv_values(path)["PWASYNC_PWA_USERNAME"] == "CONTOSO\\svc-pwasync"
    assert "PWASYNC_PWA_USERNAME=CONTOSO\\svc-pwasync\n" in path.read_text()


def test_the_settings_file_trusts_its_sign_in_host_and_names_graphs_resource(
    sandbox: RunningSandbox,
) -> None:
    # The product refuses a sign-in host that is not Microsoft's unless told it is trusted, and
    # asks for a token whose audience is the Graph URL's origin unless told the resource.
    settings = load_settings(sandbox.settings)
    assert settings.authority_host == sandbox.url and settings.authority_host_trusted
    assert settings.graph_url == f"{sandbox.url}/v1.0"
    assert settings.graph_scope == "https://graph.microsoft.com/.default"


def test_the_online_settings_file_is_as_before(sandbox: RunningSandbox) -> None:
    settings = sandbox.settings
    assert settings["PWASYNC_PWA_URL"] == f"{sandbox.url}/sites/pwa"
    assert settings["PWASYNC_PWA_AUTH"] == "sharepoint_online"
    assert settings["PWASYNC_PWA_USERNAME"] == "svc-pwasync@contoso.onmicrosoft.com"
    assert settings["PWASYNC_PWA_CLIENT_ID"]


def test_the_tenant_reports_its_edition(control: SandboxClient, control_se: SandboxClient) -> None:
    assert control.tenant()["edition"] == "online"
    assert control_se.tenant()["edition"] == "se"
    assert control_se.tenant()["pwa_site_url"].endswith("/pwa")


def test_the_launchers_choose_the_edition(tmp_path: Path) -> None:
    online = launch(tmp_path / "online")  # the launcher's default keeps Project Online
    se = launch(tmp_path / "se", edition="se")
    try:
        assert online.settings["PWASYNC_PWA_AUTH"] == "sharepoint_online"
        assert se.settings["PWASYNC_PWA_AUTH"] == "sharepoint_onprem"
    finally:
        assert online.stop() == 0 and se.stop() == 0


# --- ProjectData is gone on se ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("ProjectData", LIGHT),
        ("ProjectData/$metadata", {"Accept": "application/xml"}),
        ("ProjectData/Projects", VERBOSE),
        ("ProjectData/Tasks(ProjectId=guid'x',TaskId=guid'y')", {"Accept": "*/*"}),
    ],
)
def test_projectdata_answers_404_on_se(
    sandbox_se: RunningSandbox,
    control_se: SandboxClient,
    http_se: httpx.Client,
    path: str,
    accept: dict[str, str],
) -> None:
    site = sandbox_se.settings["PWASYNC_PWA_URL"]
    response = http_se.get(f"{site}/_api/{path}", headers=accept, auth=_logged_on(sandbox_se))
    assert response.status_code == 404
    body = response.json()
    found = body.get("error") or body["odata.error"]
    assert found["code"] == "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
    assert found["message"]["value"] == 'The expression "ProjectData" is not valid.'
    key = path.split("(")[0] + ("()" if "(" in path else "")
    assert control_se.stats()["pwa"]["by_path"][key] == 3  # two 401s of the logon, the 404


def test_without_credentials_projectdata_on_se_is_a_401_first(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    site = sandbox_se.settings["PWASYNC_PWA_URL"]
    assert http_se.get(f"{site}/_api/ProjectData/Projects", headers=LIGHT).status_code == 401


# --- RegionalSettings ---------------------------------------------------------------------


def test_regional_time_zone_on_se(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    url = f"{sandbox_se.settings['PWASYNC_PWA_URL']}/_api/web/RegionalSettings/TimeZone"
    auth = _logged_on(sandbox_se)
    light = http_se.get(url, headers=LIGHT, auth=auth).json()
    assert light["Id"] == 4
    assert light["Description"] == "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"
    assert light["Information"] == {"Bias": -60, "DaylightBias": -60, "StandardBias": 0}
    verbose = http_se.get(url, headers=VERBOSE).json()["d"]
    assert verbose["__metadata"]["type"] == "SP.TimeZone"
    assert verbose["Information"]["Bias"] == -60
    control_se.config(pwa_regional_time_zone="America/New_York")
    new_york = http_se.get(url, headers=LIGHT).json()
    assert (new_york["Id"], new_york["Information"]["Bias"]) == (10, 300)
    assert new_york["Information"]["DaylightBias"] == -60
    control_se.config(pwa_regional_time_zone="Asia/Kolkata")
    kolkata = http_se.get(url, headers=LIGHT).json()
    assert kolkata["Information"] == {"Bias": -330, "DaylightBias": 0, "StandardBias": 0}
    assert kolkata["Description"] == "(UTC+05:30) Asia/Kolkata"
    assert control_se.stats()["pwa"]["by_path"]["web/RegionalSettings/TimeZone"] == 6


def test_regional_time_zone_online(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    response = http.get(
        f"{sandbox.settings['PWASYNC_PWA_URL']}/_api/Web/RegionalSettings/TimeZone",
        headers={**LIGHT, "Authorization": f"Bearer {pwa_token()}"},
    )
    assert response.status_code == 200 and response.json()["Id"] == 4


def test_an_unknown_regional_zone_is_not_a_setting(control_se: SandboxClient) -> None:
    from sandbox.client import SandboxError

    with pytest.raises(SandboxError, match="unknown time zone"):
        control_se.config(pwa_regional_time_zone="Mars/Olympus")


# --- SharePoint's health score ------------------------------------------------------------


def test_a_throttled_se_answer_carries_health_score_10(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    url = f"{sandbox_se.settings['PWASYNC_PWA_URL']}/_api/ProjectServer/Projects?$select=Id"
    ok = http_se.get(url, headers=LIGHT, auth=_logged_on(sandbox_se))
    assert ok.status_code == 200 and ok.headers["X-SharePointHealthScore"] == "0"
    control_se.config(faults={"pwa": {"unavailable_ratio": 1.0}})
    busy = http_se.get(url, headers=LIGHT)
    assert busy.status_code == 503
    assert busy.headers["X-SharePointHealthScore"] == "10"
    assert busy.headers["Retry-After"] == "5"


def test_online_answers_carry_no_health_score(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client
) -> None:
    control.config(faults={"pwa": {"unavailable_ratio": 1.0}})
    busy = http.get(
        f"{sandbox.settings['PWASYNC_PWA_URL']}/_api/ProjectServer/Projects", headers=LIGHT
    )
    assert busy.status_code == 503 and "x-sharepointhealthscore" not in busy.headers
