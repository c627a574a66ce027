"""OData V3 payload formats of SharePoint REST and the ProjectData feed (WCF Data Services).

Two JSON formats exist and the ``Accept`` header (or ``$format=json``) picks one:

* verbose (``application/json;odata=verbose``): ``{"d": …}`` envelopes, ``__metadata`` on
  every entity, ``__next`` for paging and dates as ``/Date(ms)/`` — the PWA's wall-clock time
  encoded as if it were UTC, which is what WCF does with a DateTime of unspecified kind;
* JSON light (``application/json``, minimal metadata by default, or ``nometadata``):
  ``odata.metadata``/``value``/``odata.nextLink`` and ISO dates without an offset.

Both encode Edm.Int64 and Edm.Decimal as strings and, like WCF's serializer, escape every
``/`` as ``\\/``.  The Atom XML default of the real services is not implemented: a request
that asks for neither JSON format gets 406 (see sandbox/README.md).
"""

from __future__ import annotations

import json
from datetime import UTC
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


class Format(StrEnum):
    VERBOSE = "verbose"
    MINIMAL = "minimalmetadata"
    NOMETADATA = "nometadata"


class ODataError(Exception):
    """An error to return in the negotiated format's error shape."""

    def __init__(
        self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


class NotAcceptable(Exception):
    """The client asked for a payload format the sandbox does not produce (Atom, XML)."""


def negotiate(request: Request) -> Format:
    if request.query_params.get("$format", "").lower() == "json":
        return Format.MINIMAL
    for media_range in request.headers.get("accept", "").split(","):
        media_type, *parameters = (part.strip().lower() for part in media_range.split(";"))
        if media_type != "application/json":
            continue
        odata = next(
            (p.partition("=")[2] for p in parameters if p.startswith("odata=")), "minimalmetadata"
        )
        if odata == "verbose":
            return Format.VERBOSE
        return Format.NOMETADATA if odata == "nometadata" else Format.MINIMAL
    raise NotAcceptable()


def content_type(fmt: Format) -> str:
    if fmt is Format.VERBOSE:
        return "application/json;odata=verbose;charset=utf-8"
    return f"application/json;odata={fmt.value};streaming=true;charset=utf-8"


def encode_value(value: Any, edm_type: str, fmt: Format) -> Any:
    if value is None:
        return None
    if edm_type == "Edm.DateTime":
        if fmt is Format.VERBOSE:
            millis = int(value.replace(tzinfo=UTC).timestamp() * 1000)
            return f"/Date({millis})/"
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        return text + f".{value.microsecond // 1000:03d}" if value.microsecond else text
    if edm_type in ("Edm.Int64", "Edm.Decimal"):
        return str(value)
    return value


def render(
    payload: Any, fmt: Format, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # WCF escapes every solidus; JSON text has "/" only inside strings, so this is safe.
    body = json.dumps(payload, ensure_ascii=False).replace("/", "\\/")
    return Response(
        body,
        status_code=status,
        headers={
            "DataServiceVersion": "1.0;" if fmt is Format.VERBOSE else "3.0;",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        },
        media_type=content_type(fmt),
    )


def error_response(error: ODataError, fmt: Format) -> Response:
    message = {"lang": "en-US", "value": error.message}
    key = "error" if fmt is Format.VERBOSE else "odata.error"
    return render({key: {"code": error.code, "message": message}}, fmt, error.status, error.headers)


# SharePoint REST error codes: an HRESULT or Project Server error number, then the exception type.
ACCESS_DENIED_CODE = "-2147024891, System.UnauthorizedAccessException"
ACCESS_DENIED = (
    "Access denied. You do not have permission to perform this action or access this resource."
)


def project_server_code(number: int) -> str:
    """The code of a PJClientCallableException, e.g. 11519 for CustomFieldNameAlreadyExists."""
    return f"{number}, Microsoft.ProjectServer.PJClientCallableException"
