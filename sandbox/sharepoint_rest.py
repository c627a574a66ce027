"""How SharePoint's REST service (``_api/…``, not WCF's ProjectData) writes entities: verbose
``__metadata``/``__deferred`` envelopes, JSON light annotations, and its error codes."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from sandbox.odata_format import Format, render
from sandbox.pwa import PwaCall

INVALID_QUERY = "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
NOT_FOUND = "-1, Microsoft.SharePoint.Client.ResourceNotFoundException"


def api_root(call: PwaCall) -> str:
    url = call.request.url
    return f"{url.scheme}://{url.netloc}{call.sandbox.tenant.site_path}/_api"


def light(
    call: PwaCall, type_name: str, edit_link: str | None, properties: dict[str, Any]
) -> dict[str, Any]:
    """JSON light: minimal metadata annotates the entity, no metadata leaves it bare."""
    if call.fmt is Format.NOMETADATA:
        return properties
    annotations: dict[str, Any] = {"odata.type": type_name}
    if edit_link:
        annotations.update(
            {"odata.id": f"{api_root(call)}/{edit_link}", "odata.editLink": edit_link}
        )
    return {**annotations, **properties}


def entity(
    call: PwaCall, type_name: str, link: str, properties: dict[str, Any], navigation: dict[str, Any]
) -> dict[str, Any]:
    """One entity in the negotiated format; ``navigation`` maps names to expanded values or
    None when not expanded (verbose payloads then carry a deferred link, light ones nothing)."""
    if call.fmt is not Format.VERBOSE:
        expanded = {name: value for name, value in navigation.items() if value is not None}
        return light(call, type_name, link, {**properties, **expanded})
    uri = f"{api_root(call)}/{link}"
    result: dict[str, Any] = {"__metadata": {"id": uri, "uri": uri, "type": type_name}}
    for name, value in navigation.items():
        result[name] = value if value is not None else {"__deferred": {"uri": f"{uri}/{name}"}}
    return {**result, **properties}


def collection(
    call: PwaCall, type_name: str, entities: list[dict[str, Any]], next_link: str | None = None
) -> Response:
    if call.fmt is Format.VERBOSE:
        body: dict[str, Any] = {"results": entities}
        if next_link:
            body["__next"] = next_link
        return render({"d": body}, call.fmt)
    light_body: dict[str, Any] = {"value": entities}
    if call.fmt is Format.MINIMAL:
        light_body = {"odata.metadata": f"{api_root(call)}/$metadata#{type_name}", **light_body}
    if next_link:
        light_body["odata.nextLink"] = next_link
    return render(light_body, call.fmt)


def single(call: PwaCall, value: dict[str, Any]) -> Response:
    return render({"d": value} if call.fmt is Format.VERBOSE else value, call.fmt)
