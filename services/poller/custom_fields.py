"""The enterprise custom field that selects tasks: verify it, or create it.

Through the ProjectServer REST API: ``CustomFields`` to find it, ``EntityTypes/TaskEntity`` for
the task entity's id (its GUID is not documented, so it is looked up), ``contextinfo`` for the
request digest every POST needs, and ``CustomFields/Add`` with FieldType 17 (FLAG). Creation is
idempotent: the field is created only when no field of that name (in any letter case) and no
field with the same ProjectData property exists; an existing field of the wrong type, entity
or letter case is reported with what to do, never changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.errors import PermanentApiError
from services.poller import odata
from services.poller.pwa_http import PwaHttp

FLAG = 17
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
FIELD_TYPE_NAMES = {
    4: "DATE",
    6: "DURATION",
    9: "COST",
    15: "NUMBER",
    17: "FLAG",
    21: "TEXT",
    27: "FINISHDATE",
}


class FieldState(StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG_TYPE = "wrong_type"
    WRONG_ENTITY = "wrong_entity"
    WRONG_CASE = "wrong_case"
    SAME_PROPERTY = "same_property"
    NOT_REPORTED = "not_reported"


@dataclass(frozen=True)
class FieldCheck:
    name: str
    state: FieldState
    detail: str

    @property
    def ok(self) -> bool:
        return self.state is FieldState.OK


@dataclass(frozen=True)
class FieldInfo:
    field_id: str
    name: str
    field_type: int
    entity_type_id: str | None


def check_field(
    name: str, fields: list[FieldInfo], task_entity_id: str, *, projectdata: bool = True
) -> FieldCheck:
    """Compare the fields the PWA has with the one we need (pure). ``projectdata``: the plans
    are read through ProjectData, where a field is known by its name without spaces and
    special characters, so two names that differ only in those collide."""
    exact = [f for f in fields if f.name == name]
    if not exact:
        other_case = [f for f in fields if f.name.lower() == name.lower()]
        if other_case:
            found = other_case[0].name
            why = (
                f"its ProjectData property is {odata.property_name(found)!r}, not "
                f"{odata.property_name(name)!r}"
                if projectdata
                else "the name must match exactly"
            )
            return FieldCheck(
                name,
                FieldState.WRONG_CASE,
                f"a field named {found!r} exists; {why}: "
                f"set PWASYNC_CREATE_EVENT_FIELD={found!r} or rename the field",
            )
        prop = odata.property_name(name)
        same_property = [f for f in fields if odata.property_name(f.name) == prop]
        if projectdata and same_property:
            return FieldCheck(
                name,
                FieldState.SAME_PROPERTY,
                f"does not exist, but the field {same_property[0].name!r} has the same "
                f"ProjectData property {prop!r}: set PWASYNC_CREATE_EVENT_FIELD="
                f"{same_property[0].name!r} or rename that field",
            )
        return FieldCheck(
            name,
            FieldState.MISSING,
            "does not exist; create it with `pwasync fields create` (needs the PWA permission "
            "Manage Enterprise Custom Fields) or in PWA (Server Settings > Enterprise Custom "
            "Fields: entity Task, type Flag)",
        )
    field = exact[0]
    if field.field_type != FLAG:
        type_name = FIELD_TYPE_NAMES.get(field.field_type, str(field.field_type))
        return FieldCheck(
            name,
            FieldState.WRONG_TYPE,
            f"exists with type {type_name}, but must be a Flag (Yes/No) field; delete or rename "
            "it in PWA (Server Settings > Enterprise Custom Fields), then run "
            "`pwasync fields create`",
        )
    if field.entity_type_id is not None and field.entity_type_id.lower() != task_entity_id.lower():
        return FieldCheck(
            name,
            FieldState.WRONG_ENTITY,
            "exists, but on another entity than Task; the flag must be a Task field: delete or "
            "rename it in PWA, then run `pwasync fields create`",
        )
    return FieldCheck(name, FieldState.OK, "Task field of type Flag")


class CustomFieldsClient:
    def __init__(self, http: PwaHttp) -> None:
        self._http = http
        self._api = f"{http.site_url}/_api/ProjectServer"

    def task_entity_id(self) -> str:
        data = _unwrap(self._http.get_json(f"{self._api}/EntityTypes/TaskEntity"))
        entity_id = data.get("ID") or data.get("Id")
        if not entity_id:
            raise PermanentApiError(f"{self._http.service}: EntityTypes/TaskEntity has no ID")
        return str(entity_id)

    def fields(self) -> list[FieldInfo]:
        """Every enterprise custom field with its entity type, in one request."""
        url = f"{self._api}/CustomFields?$select=Id,Name,FieldType,EntityType/ID&$expand=EntityType"
        data = _unwrap(self._http.get_json(url))
        rows = data.get("results", data.get("value", [])) if isinstance(data, dict) else data
        return [
            FieldInfo(str(row["Id"]), str(row["Name"]), int(row["FieldType"]), _entity_id(row))
            for row in rows
        ]

    def check(self, name: str, task_entity_id: str, *, projectdata: bool = True) -> FieldCheck:
        return check_field(name, self.fields(), task_entity_id, projectdata=projectdata)

    def reported_in_projectdata(self, name: str) -> bool:
        """True once the ProjectData feed exposes the field (its reporting schema knows it)."""
        prop = odata.property_name(name)
        url = f"{self._http.site_url}/_api/ProjectData/Tasks?$select=TaskId,{prop}&$top=1"
        try:
            self._http.get_json(url)
        except PermanentApiError as exc:
            if exc.status == 400:
                return False
            raise
        return True

    def create_flag_field(self, name: str, task_entity_id: str) -> str:
        body = {
            "parameters": {
                "Id": str(uuid.uuid4()),
                "Name": name,
                "Description": "Yes: pwasync puts this task in its assignees' Outlook calendars",
                "EntityTypeId": task_entity_id,
                "FieldType": FLAG,
                "IsRequired": False,
                "IsWorkflowControlled": False,
                "IsMultilineText": False,
                "IsEditableInVisibility": False,
                "LookupAllowMultiSelect": False,
            }
        }
        try:
            created = self._add(body)
        except PermanentApiError as exc:
            if exc.status == 403:
                raise PermanentApiError(
                    f"cannot create the field {name!r}: the account lacks the PWA permission "
                    "Manage Enterprise Custom Fields (or the app the delegated permission "
                    "ProjectWebApp.FullControl); ask a PWA administrator to create the Task field "
                    f"{name!r} of type Flag, or to grant the permission ({exc})",
                    status=403,
                ) from None
            raise
        data = _unwrap(created)
        return str(data.get("Id", body["parameters"]["Id"]))

    def _add(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST CustomFields/Add (every non-GET call needs a fresh request digest)."""
        return self._http.request_json(
            "POST",
            f"{self._api}/CustomFields/Add",
            json_body=body,
            headers={
                "X-RequestDigest": self._http.form_digest(),
                "Content-Type": "application/json",
            },
        )


def _entity_id(row: dict[str, Any]) -> str | None:
    entity = row.get("EntityType")
    if isinstance(entity, dict) and "__deferred" not in entity:
        value = entity.get("ID") or entity.get("Id")
        return str(value) if value else None
    return None


def _unwrap(data: dict[str, Any]) -> Any:
    """The payload of a verbose (``{"d": …}``) or light response."""
    return data.get("d", data)
