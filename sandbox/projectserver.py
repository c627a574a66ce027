"""SharePoint's ``_api/contextinfo`` and the custom-field part of ``_api/ProjectServer``; its
read API (projects, tasks, assignments, resources) is ``projectserver_read``.

Writes need an ``X-RequestDigest`` from ``contextinfo`` (valid 1800 s, bound to the user) and
the "Manage Enterprise Custom Fields" permission.  ``CustomFields/Add`` validates like Project
Server and fails with its ``PJClientCallableException`` error numbers.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import projectserver_read, server_events
from sandbox.odata_filter import FilterError, Schema, check, matches, parse_filter
from sandbox.odata_format import Format, ODataError, project_server_code, render
from sandbox.pwa import WRITE_SCOPES, PwaCall, pwa_endpoint
from sandbox.reporting import CUSTOM_FIELD_EDM_TYPES, ENTITY_SETS
from sandbox.seed import internal_name
from sandbox.sharepoint_rest import INVALID_QUERY, NOT_FOUND, collection, entity, light, single
from sandbox.state import (
    FLAG_FIELD_TYPE,
    MANAGE_CUSTOM_FIELDS,
    USE_REMOTE_INTERFACES,
    CustomField,
    Tenant,
    odata_property_name,
)

DIGEST_LIFETIME_S = 1800
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_ENTITY_SETS_BY_ENTITY = {
    "ProjectEntity": "Projects",
    "TaskEntity": "Tasks",
    "ResourceEntity": "Resources",
    "AssignmentEntity": "Assignments",
}
_FIELD_PATH = re.compile(r"^CustomFields\((?:guid)?'(?P<id>[0-9A-Fa-f-]{36})'\)(?P<rest>/.*)?$")
_FIELD_SCHEMA = Schema(
    "PS.CustomField",
    {
        "Id": "Edm.Guid",
        "Name": "Edm.String",
        "FieldType": "Edm.Int32",
        "InternalName": "Edm.String",
        "Description": "Edm.String",
        "IsRequired": "Edm.Boolean",
    },
)


# ---------------------------------------------------------------------------------------------
# Form digest


def _digest(call: PwaCall, issued: int) -> str:
    stamp = datetime.fromtimestamp(issued, UTC).strftime("%d %b %Y %H:%M:%S -0000")
    return f"0x{call.sandbox.signer.mac(f'{call.user.id}|{issued}')},{stamp}"


def check_digest(call: PwaCall) -> None:
    value = call.request.headers.get("x-requestdigest", "")
    mac, _, stamp = value.partition(",")
    try:
        issued = int(
            datetime.strptime(stamp, "%d %b %Y %H:%M:%S -0000").replace(tzinfo=UTC).timestamp()
        )
    except ValueError:
        issued = 0
    if not issued or value != _digest(call, issued) or time.time() > issued + DIGEST_LIFETIME_S:
        raise ODataError(
            403,
            "The security validation for this page is invalid and might be "
            "corrupted. Please use your web browser's Back button to try your "
            "operation again.",
            "-2130575251, Microsoft.SharePoint.SPException",
        )


async def _context_info(call: PwaCall) -> Response:
    site = call.sandbox.pwa_site_url
    info = {
        "FormDigestTimeoutSeconds": DIGEST_LIFETIME_S,
        "FormDigestValue": _digest(call, int(time.time())),
        "LibraryVersion": "16.0.25419.12007",
        "SiteFullUrl": site,
        "SupportedSchemaVersions": ["14.0.0.0", "15.0.0.0"],
        "WebFullUrl": site,
    }
    if call.fmt is Format.VERBOSE:
        info["__metadata"] = {"type": "SP.ContextWebInformation"}
        info["SupportedSchemaVersions"] = {
            "__metadata": {"type": "Collection(Edm.String)"},
            "results": info["SupportedSchemaVersions"],
        }
        return render({"d": {"GetContextWebInformation": info}}, call.fmt)
    return render(light(call, "SP.ContextWebInformation", None, info), call.fmt)


# ---------------------------------------------------------------------------------------------
# Entities


def _entity_type(call: PwaCall, name: str, guid: str) -> dict[str, Any]:
    link = f"ProjectServer/EntityTypes/{name}"
    return entity(
        call, "PS.EntityType", link, {"ID": guid, "Name": name.removesuffix("Entity")}, {}
    )


def _field_properties(custom_field: CustomField) -> dict[str, Any]:
    return {
        "AppAlternateId": ZERO_GUID,
        "Description": custom_field.description,
        "FieldType": custom_field.field_type,
        "Formula": None,
        "Id": custom_field.id,
        "InternalName": custom_field.internal_name,
        "IsEditableInVisibility": False,
        "IsMultilineText": False,
        "IsRequired": custom_field.is_required,
        "IsWorkflowControlled": False,
        "LookupAllowMultiSelect": False,
        "LookupDefaultValue": ZERO_GUID,
        "Name": custom_field.name,
        "RollDown": False,
        "RollupType": 0,
    }


def _field(call: PwaCall, custom_field: CustomField, expand: set[str]) -> dict[str, Any]:
    tenant = call.sandbox.tenant
    entity_name = next(
        n for n, g in tenant.entity_types.items() if g == custom_field.entity_type_id
    )
    navigation = {
        "EntityType": (
            _entity_type(call, entity_name, custom_field.entity_type_id)
            if "EntityType" in expand
            else None
        ),
        "LookupEntries": {"results": []} if "LookupEntries" in expand else None,
        # A field without a lookup table expands to null.
        "LookupTable": None,
    }
    return entity(
        call,
        "PS.CustomField",
        f"ProjectServer/CustomFields('{custom_field.id}')",
        _field_properties(custom_field),
        navigation,
    )


# ---------------------------------------------------------------------------------------------
# ProjectServer routes


async def _project_server(call: PwaCall) -> Response:
    path = call.request.path_params["path"].strip("/")
    method = call.request.method
    if method == "GET" and projectserver_read.handles(path):
        return await projectserver_read.read(call, path)
    if call.sandbox.on_premises:
        # SharePoint Server refuses every CSOM/REST call without "Use Remote Interfaces". The
        # online edition keeps its custom-field routes gated only as before (see README).
        call.require_permission(USE_REMOTE_INTERFACES)
    if server_events.handles(path):
        return await server_events.route(call, path)
    if method == "POST" and path == "CustomFields/Add":
        return await _add_field(call)
    if method == "GET":
        expand = {e.strip() for e in call.request.query_params.get("$expand", "").split(",")}
        if path == "CustomFields":
            return _list_fields(call, expand)
        match = _FIELD_PATH.match(path)
        if match:
            return _field_route(call, match["id"].lower(), match["rest"] or "", expand)
        if path == "EntityTypes":
            return _entity_types(call)
        name = path.removeprefix("EntityTypes/")
        if name in call.sandbox.tenant.entity_types:
            return single(call, _entity_type(call, name, call.sandbox.tenant.entity_types[name]))
    raise ODataError(404, f"Cannot find resource for the request {path}.", NOT_FOUND)


def _list_fields(call: PwaCall, expand: set[str]) -> Response:
    fields = list(call.sandbox.tenant.custom_fields.values())
    if "$filter" in call.request.query_params:
        try:
            expression = parse_filter(call.request.query_params["$filter"])
            check(expression, _FIELD_SCHEMA)
        except FilterError as error:
            raise ODataError(400, str(error), INVALID_QUERY) from error
        fields = [f for f in fields if matches(expression, _field_properties(f))]
    return collection(call, "PS.CustomFields", [_field(call, f, expand) for f in fields])


def _field_route(call: PwaCall, field_id: str, rest: str, expand: set[str]) -> Response:
    custom_field = call.sandbox.tenant.custom_fields.get(field_id)
    if custom_field is None:
        raise ODataError(404, "The custom field does not exist.", NOT_FOUND)
    if rest == "/EntityType":
        return single(call, _field(call, custom_field, {"EntityType"})["EntityType"])
    if rest:
        raise ODataError(404, f"Cannot find resource for the request {rest.strip('/')}.", NOT_FOUND)
    return single(call, _field(call, custom_field, expand))


def _entity_types(call: PwaCall) -> Response:
    navigation = {name: None for name in call.sandbox.tenant.entity_types}
    return single(call, entity(call, "PS.EntityTypes", "ProjectServer/EntityTypes", {}, navigation))


# ---------------------------------------------------------------------------------------------
# CustomFields/Add


class _Rejected(ODataError):
    def __init__(self, number: int, name: str) -> None:
        super().__init__(400, name, project_server_code(number))


async def _add_field(call: PwaCall) -> Response:
    call.require_scope(WRITE_SCOPES)
    check_digest(call)
    if MANAGE_CUSTOM_FIELDS not in call.user.pwa_permissions:
        raise ODataError(403, "GeneralSecurityAccessDenied", project_server_code(20010))
    parameters = await _parameters(call.request)
    custom_field = _validated_field(call.sandbox.tenant, parameters)
    call.sandbox.tenant.add_custom_field(custom_field)
    return single(call, _field(call, custom_field, set()))


async def _parameters(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as error:
        raise ODataError(
            400, "Invalid JSON. A token was not recognized in the JSON content.", INVALID_QUERY
        ) from error
    parameters = body.get("parameters") if isinstance(body, dict) else None
    if not isinstance(parameters, dict):
        raise ODataError(
            400, "The parameter parameters does not exist in method Add.", INVALID_QUERY
        )
    # SharePoint binds parameter members case-insensitively.
    return {name.lower(): value for name, value in parameters.items() if name != "__metadata"}


def _validated_field(tenant: Tenant, parameters: dict[str, Any]) -> CustomField:
    entity_type_id = str(parameters.get("entitytypeid") or "").lower()
    entity_name = next((n for n, g in tenant.entity_types.items() if g == entity_type_id), None)
    if entity_name is None:
        raise _Rejected(11505, "CustomFieldInvalidEntityUID")
    name = str(parameters.get("name") or "").strip()
    if not name or len(name) > 255 or not odata_property_name(name):
        raise _Rejected(11508, "CustomFieldInvalidName")
    intrinsic = dict(ENTITY_SETS[_ENTITY_SETS_BY_ENTITY[entity_name]].properties)
    if odata_property_name(name) in intrinsic:  # it would shadow a ProjectData property
        raise _Rejected(11530, "CustomFieldNameMatchesIntrinsicField")
    if tenant.field_by_name(name):
        raise _Rejected(11519, "CustomFieldNameAlreadyExists")
    field_type = parameters.get("fieldtype")
    if field_type not in CUSTOM_FIELD_EDM_TYPES:
        raise _Rejected(11703, "CustomFieldInvalidType")
    lookup_table = str(parameters.get("lookuptableid") or ZERO_GUID).lower()
    if lookup_table != ZERO_GUID:
        if field_type == FLAG_FIELD_TYPE:  # a Yes/No field cannot use a lookup table
            raise _Rejected(11512, "CustomFieldTypeDoesNotMatchLookupTableMask")
        raise _Rejected(11511, "CustomFieldInvalidLookupTableUID")  # the sandbox has none
    field_id = str(parameters.get("id") or uuid.uuid4()).lower()
    try:
        field_id = str(uuid.UUID(field_id))
    except ValueError as error:
        raise _Rejected(11702, "CustomFieldInvalidUID") from error
    if field_id in tenant.custom_fields:
        raise _Rejected(11517, "CustomFieldUIDAlreadyExists")
    return CustomField(
        id=field_id,
        name=name,
        field_type=field_type,
        entity_type_id=entity_type_id,
        internal_name=internal_name(field_id),
        description=str(parameters.get("description") or ""),
        is_required=bool(parameters.get("isrequired")),
    )


def _path_key(request: Request) -> str:
    if "path" not in request.path_params:
        return "contextinfo"
    return "ProjectServer/" + re.sub(r"\([^)]*\)", "()", request.path_params["path"])


def routes(site_path: str) -> list[Route]:
    return [
        Route(
            f"{site_path}/_api/contextinfo",
            pwa_endpoint(_context_info, _path_key),
            methods=["POST"],
        ),
        Route(
            f"{site_path}/_api/ProjectServer/{{path:path}}",
            pwa_endpoint(_project_server, _path_key),
            methods=["GET", "POST", "DELETE"],
        ),
    ]
