"""Creating the "Create event" flag field through ProjectServer, as ``pwasync fields create``
does, and flagging tasks through the control surface."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import RunningSandbox, TokenFactory

LIGHT = {"Accept": "application/json"}
READER = ("pwa-reader@contoso.onmicrosoft.com", "Sandbox-Reader-2026!")


class Pwa:
    def __init__(self, sandbox: RunningSandbox, http: httpx.Client, token: str) -> None:
        self.site, self.http = sandbox.settings["PWASYNC_PWA_URL"], http
        self.headers = {**LIGHT, "Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(
            f"{self.site}/_api/{path}", params=params or None, headers=self.headers
        )

    def digest(self) -> str:
        info = self.http.post(f"{self.site}/_api/contextinfo", headers=self.headers).json()
        assert info["FormDigestTimeoutSeconds"] == 1800
        return info["FormDigestValue"]

    def add_field(self, parameters: dict[str, Any], digest: str | None = None) -> httpx.Response:
        headers = {**self.headers, "Content-Type": "application/json"}
        if digest:
            headers["X-RequestDigest"] = digest
        return self.http.post(
            f"{self.site}/_api/ProjectServer/CustomFields/Add",
            json={"parameters": parameters},
            headers=headers,
        )


def _flag_field(pwa: Pwa, **overrides: Any) -> dict[str, Any]:
    task_entity = pwa.get("ProjectServer/EntityTypes/TaskEntity").json()["ID"]
    return {
        "Name": "Create event",
        "Description": "Create Outlook events for this task",
        "EntityTypeId": task_entity,
        "FieldType": 17,
        "LookupTableId": None,
        **overrides,
    }


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["odata.error"]
    return response.status_code, error["code"], error["message"]["value"]


def test_create_flag_field_then_flag_tasks(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, pwa_token: TokenFactory
) -> None:
    pwa = Pwa(sandbox, http, pwa_token())
    assert pwa.get("ProjectServer/CustomFields").json()["value"] == []
    with pytest.raises(SandboxError) as missing:
        control.flag_tasks(control.demo_flag_task_ids())
    assert missing.value.status == 409

    created = pwa.add_field(_flag_field(pwa), pwa.digest())
    assert created.status_code == 200, created.text
    field = created.json()
    assert field["Name"] == "Create event" and field["FieldType"] == 17
    assert field["InternalName"] == "Custom_" + field["Id"].replace("-", "")

    listed = pwa.get(
        "ProjectServer/CustomFields",
        **{"$expand": "EntityType", "$filter": "Name eq 'Create event'"},
    )
    assert listed.json()["value"][0]["EntityType"]["Name"] == "Task"
    entity_type = pwa.get(f"ProjectServer/CustomFields('{field['Id']}')/EntityType").json()
    assert entity_type["ID"] == _flag_field(pwa)["EntityTypeId"]
    assert "Createevent" in pwa.get("ProjectData/$metadata").text

    task_ids = control.demo_flag_task_ids()
    control.flag_tasks(task_ids)
    flagged = pwa.get(
        "ProjectData/Tasks", **{"$filter": "Createevent eq true", "$select": "TaskId"}
    ).json()["value"]
    assert {t["TaskId"] for t in flagged} == set(task_ids)
    unflagged = pwa.get("ProjectData/Tasks", **{"$filter": "Createevent eq null"}).json()
    assert unflagged["value"], "an unset flag reads as null"


@pytest.mark.parametrize(
    ("overrides", "code", "name"),
    [
        (
            {"LookupTableId": "0b1e2f3a-0000-4000-8000-000000000001"},
            11512,
            "CustomFieldTypeDoesNotMatchLookupTableMask",
        ),
        (
            {"EntityTypeId": "0b1e2f3a-0000-4000-8000-000000000002"},
            11505,
            "CustomFieldInvalidEntityUID",
        ),
        ({"Name": "TaskName"}, 11530, "CustomFieldNameMatchesIntrinsicField"),
        ({"FieldType": 99}, 11703, "CustomFieldInvalidType"),
    ],
)
def test_invalid_fields_are_rejected(
    sandbox: RunningSandbox,
    http: httpx.Client,
    control: SandboxClient,
    pwa_token: TokenFactory,
    overrides: dict[str, Any],
    code: int,
    name: str,
) -> None:
    pwa = Pwa(sandbox, http, pwa_token())
    response = pwa.add_field(_flag_field(pwa, **overrides), pwa.digest())
    assert _error(response) == (
        400,
        f"{code}, Microsoft.ProjectServer.PJClientCallableException",
        name,
    )


def test_duplicate_digest_and_permission(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, pwa_token: TokenFactory
) -> None:
    pwa = Pwa(sandbox, http, pwa_token())
    assert pwa.add_field(_flag_field(pwa)).status_code == 403  # no X-RequestDigest
    assert pwa.add_field(_flag_field(pwa), "0xFORGED,24 Nov 2026 08:00:00 -0000").status_code == 403
    digest = pwa.digest()
    assert pwa.add_field(_flag_field(pwa), digest).status_code == 200
    assert (
        _error(pwa.add_field(_flag_field(pwa, Name="create EVENT"), digest))[2]
        == "CustomFieldNameAlreadyExists"
    )
    reader = Pwa(sandbox, http, pwa_token(*READER))
    denied = reader.add_field(_flag_field(reader, Name="Other"), reader.digest())
    assert _error(denied)[:2] == (403, "20010, Microsoft.ProjectServer.PJClientCallableException")


def test_verbose_context_info(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    response = http.post(
        f"{sandbox.settings['PWASYNC_PWA_URL']}/_api/contextinfo",
        headers={
            "Accept": "application/json;odata=verbose",
            "Authorization": f"Bearer {pwa_token()}",
        },
    )
    info = response.json()["d"]["GetContextWebInformation"]
    assert info["__metadata"] == {"type": "SP.ContextWebInformation"}
    assert info["FormDigestValue"].startswith("0x")
    assert info["SupportedSchemaVersions"]["results"] == ["14.0.0.0", "15.0.0.0"]
