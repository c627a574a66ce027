"""The Dataverse Web API of the emulated Planner premium environment (``/api/data/v9.2``).

Served on the sandbox's ``localhost`` origin, which is the environment URL and the token
audience (the PWA and Graph keep ``127.0.0.1``). Callers are application users: an app-only
token for ``{environment}/.default`` whose app is an application user of the environment;
each table is readable as far as that user's security role grants Read (organisation level
sees every row, user level only the rows it owns: none here). Implemented: collection reads
(``dataverse_query``), ``WhoAmI``, ``RetrieveUserPrivileges``, table metadata
(``EntityDefinitions``: ``ChangeTrackingEnabled``, Boolean attributes, creating one), service
protection's 429 with ``Retry-After`` and injected failures per table.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.context import Sandbox
from sandbox.dataverse_query import QueryError, prefer_values, query
from sandbox.dataverse_store import ApplicationUser, DataverseStore
from sandbox.state import StateError
from sandbox.tokens import TokenError, bearer_token

API = "/api/data/v9.2"
_ENTITY = re.compile(r"^EntityDefinitions\(LogicalName='([a-z_0-9]+)'\)(?:/(.*))?$")
_ATTRIBUTE = re.compile(r"^Attributes\(LogicalName='([a-z_0-9]+)'\)$")
_PRIVILEGES = re.compile(
    r"^systemusers\(([0-9a-fA-F-]{36})\)/Microsoft\.Dynamics\.CRM\.RetrieveUserPrivileges(?:\(\))?$"
)
BOOLEAN = "Microsoft.Dynamics.CRM.BooleanAttributeMetadata"
_DEPTHS = {"user": "Basic", "business_unit": "Local", "organization": "Global"}


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def service_root(sandbox: Sandbox) -> str:
    return f"{sandbox.dataverse_url}{API}"


async def web_api(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    store = sandbox.dataverse
    path = request.path_params["path"]
    kind = _kind(path)
    try:
        user = _caller(sandbox, request)
        _protect(store, user)
        _injected_fault(store, kind)
        response = await _dispatch(sandbox, store, user, request, path)
    except DataverseError as error:
        response = error.response()
    except QueryError as error:
        response = DataverseError(error.status, error.code, str(error)).response()
    except StateError as error:
        response = DataverseError(error.status, "0x80040217", str(error)).response()
    store.requests[kind] += 1
    store.statuses[response.status_code] += 1
    response.headers["OData-Version"] = "4.0"
    return response


def _kind(path: str) -> str:
    """What a request is counted as: the entity set, ``EntityDefinitions`` or the function."""
    first = path.split("/", 1)[0].split("(", 1)[0]
    return "RetrieveUserPrivileges" if "RetrieveUserPrivileges" in path else first


async def _dispatch(
    sandbox: Sandbox, store: DataverseStore, user: ApplicationUser, request: Request, path: str
) -> Response:
    root = service_root(sandbox)
    if path == "WhoAmI" and request.method == "GET":
        return JSONResponse(
            {
                "@odata.context": f"{root}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": sandbox.dataverse_business_unit,
                "UserId": user.systemuser_id,
                "OrganizationId": sandbox.dataverse_organization,
            }
        )
    if match := _PRIVILEGES.match(path):
        return _privileges(store, match.group(1))
    if match := _ENTITY.match(path):
        return await _metadata(store, user, request, match.group(1), match.group(2) or "", root)
    if request.method != "GET":
        raise DataverseError(405, "0x80060888", f"{request.method} is not emulated on {path}.")
    spec = store.spec(path)
    level = user.read_level(spec.logical_name)
    if level == "none":
        raise DataverseError(
            403,
            "0x80040220",
            f"Principal user (Id={user.systemuser_id}, type=8, roleCount=1) is missing "
            f"prvRead{spec.logical_name} privilege on OTC={spec.object_type_code} for entity "
            f"'{spec.logical_name}'. Consider assigning a role with the required access level.",
        )
    params = dict(request.query_params)
    prefer = prefer_values(request.headers.get("prefer", ""))
    tracking = "odata.track-changes" in prefer or "$deltatoken" in params
    if tracking and level != "organization":
        raise DataverseError(
            403,
            "0x80044354",
            f"Change tracking of '{spec.logical_name}' needs organization-level read privilege.",
        )
    page = query(store, spec, params, prefer, root)
    if level != "organization":  # the rows are owned by the plans' users, never by the app
        page.body["value"] = []
        page.body.pop("@odata.nextLink", None)
    headers = {}
    if page.page_size is not None:
        headers["Preference-Applied"] = f"odata.maxpagesize={page.page_size}"
    return JSONResponse(page.body, headers=headers)


def _caller(sandbox: Sandbox, request: Request) -> ApplicationUser:
    try:
        principal = sandbox.signer.verify(bearer_token(request.headers.get("authorization")))
    except TokenError as error:
        raise DataverseError(
            401, "0x80072560", f"Authentication failed: the bearer token is {error.reason}."
        ) from None
    if principal.audience.rstrip("/") != sandbox.dataverse_url:
        raise DataverseError(
            401, "0x80072560", f"The token's audience {principal.audience} is not this environment."
        )
    user = sandbox.dataverse.application_users.get(str(principal.claims.get("appid", "")))
    if user is None:
        raise DataverseError(
            403,
            "0x80072560",
            "The user is not a member of the organization (the app has no application user in "
            "this environment).",
        )
    return user


def _protect(store: DataverseStore, user: ApplicationUser) -> None:
    wait = store.protection.retry_after(user.client_id)
    if wait is not None:
        raise DataverseError(
            429,
            "0x80072322",
            f"Number of requests exceeded the limit of {store.protection.limit} over time window "
            f"of {int(store.protection.window_s)} seconds.",
            {"Retry-After": str(math.ceil(wait))},
        )


def _injected_fault(store: DataverseStore, kind: str) -> None:
    statuses = store.faults.get(kind)
    if statuses:
        status = statuses.pop(0)
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        raise DataverseError(status, "0x80040216", f"injected failure {status}", headers)


def _privileges(store: DataverseStore, user_id: str) -> Response:
    user = next(
        (u for u in store.application_users.values() if u.systemuser_id == user_id.lower()), None
    )
    if user is None:
        raise DataverseError(404, "0x80040217", f"systemuser With Id = {user_id} Does Not Exist")
    privileges = [
        {"Depth": _DEPTHS[level], "PrivilegeName": f"prvRead{table}", "BusinessUnitId": None}
        for table, level in sorted(user.read.items())
        if level in _DEPTHS
    ]
    if user.customize:
        privileges.append({"Depth": "Global", "PrivilegeName": "prvCreateAttribute"})
    return JSONResponse({"RolePrivileges": privileges})


async def _metadata(
    store: DataverseStore,
    user: ApplicationUser,
    request: Request,
    logical_name: str,
    rest: str,
    root: str,
) -> Response:
    spec = store.spec_by_logical(logical_name)
    if rest == "" and request.method == "GET":
        entity = {
            "LogicalName": spec.logical_name,
            "EntitySetName": spec.entity_set,
            "ChangeTrackingEnabled": store.change_tracking[spec.logical_name],
            "ObjectTypeCode": spec.object_type_code,
            "MetadataId": store.metadata_ids.setdefault(
                spec.logical_name, _uuid(spec.logical_name)
            ),
        }
        return JSONResponse(_selected(entity, request) | {"@odata.context": f"{root}/$metadata"})
    if rest in ("Attributes", f"Attributes/{BOOLEAN}") and request.method == "GET":
        attributes = [
            _selected({**meta, "@odata.type": f"#{BOOLEAN}"}, request)
            for meta in spec.custom.values()
        ]
        return JSONResponse({"@odata.context": f"{root}/$metadata", "value": attributes})
    if match := _ATTRIBUTE.match(rest):
        meta = spec.custom.get(match.group(1))
        if meta is None:
            raise DataverseError(
                404, "0x80040217", f"Could not find attribute with name '{match.group(1)}'."
            )
        return JSONResponse(_selected({**meta, "@odata.type": f"#{BOOLEAN}"}, request))
    if rest == "Attributes" and request.method == "POST":
        return _create_attribute(store, user, spec.logical_name, await request.body(), root)
    raise DataverseError(405, "0x80060888", f"{request.method} is not emulated on {rest}.")


def _create_attribute(
    store: DataverseStore, user: ApplicationUser, table: str, raw: bytes, root: str
) -> Response:
    if not user.customize:
        raise DataverseError(
            403,
            "0x80040220",
            f"Principal user (Id={user.systemuser_id}, type=8) is missing prvCreateAttribute "
            "privilege. Consider assigning the System Customizer role.",
        )
    try:
        body = json.loads(raw)
    except ValueError:
        raise DataverseError(400, "0x80048d19", "The request body is not valid JSON.") from None
    if body.get("@odata.type") != BOOLEAN:
        raise DataverseError(
            400, "0x80048d19", "Only Boolean attributes are emulated (@odata.type missing)."
        )
    schema = str(body.get("SchemaName") or "")
    prefix = schema.split("_", 1)[0].lower() if "_" in schema else ""
    if prefix not in store.publisher_prefixes:
        raise DataverseError(
            400,
            "0x80047013",
            f"The SchemaName {schema!r} must start with a publisher's customization prefix "
            f"and an underscore (this environment has {sorted(store.publisher_prefixes)}).",
        )
    option_set = body.get("OptionSet") or {}
    if not option_set.get("TrueOption") or not option_set.get("FalseOption"):
        raise DataverseError(400, "0x80048d19", "A Boolean attribute needs TrueOption/FalseOption.")
    if not (body.get("DisplayName") or {}).get("LocalizedLabels"):
        raise DataverseError(400, "0x80048d19", "The attribute needs a DisplayName label.")
    metadata_id = store.add_custom_column(table, body)
    entity_id = f"{root}/EntityDefinitions(LogicalName='{table}')/Attributes({metadata_id})"
    return Response(status_code=204, headers={"OData-EntityId": entity_id})


def _selected(entity: dict[str, Any], request: Request) -> dict[str, Any]:
    select = request.query_params.get("$select")
    if not select:
        return entity
    names = {n.strip() for n in select.split(",")} | {"@odata.type", "MetadataId"}
    return {k: v for k, v in entity.items() if k in names}


def _uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pwasync-sandbox:metadata:{name}"))


routes = [Route(f"{API}/{{path:path}}", web_api, methods=["GET", "POST", "PATCH", "DELETE"])]
