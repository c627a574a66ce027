"""App-only sign-in to a Planner premium environment, and its HTTP edge.

Dataverse takes client-credential tokens for ``{environment}/.default`` from an app that is an
*application user* of the environment (no operator sign-in, no password). The app is
``PWASYNC_DATAVERSE_CLIENT_ID`` with its secret or certificate, or else the Graph app of the
calendar writer (interface page). Requests go through ``PwaHttp`` (429/503 ``Retry-After``,
bounded retries, stop-aware waits, the bearer token never sent off the environment's origin)
with the OData 4.0 headers the Web API expects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import msal

from common.errors import PermanentApiError
from common.identity import MsalHttp, authority_url, sign_in_error
from common.settings import Settings
from services.poller.paging import MAX_PAGES
from services.poller.pwa_auth import BearerAuth
from services.poller.pwa_http import PwaHttp

SERVICE = "Dataverse"
METRIC_SERVICE = "dataverse"  # the HTTP metrics' service label
API_PATH = "/api/data/v9.2"
ODATA_HEADERS = {
    "Accept": "application/json",
    "OData-Version": "4.0",
    "OData-MaxVersion": "4.0",
}


class DataverseAppTokens:
    """Client-credential tokens for the environment (secret or certificate)."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        settings.require_dataverse()
        self._settings = settings
        self._http = MsalHttp(http, settings.authority_host)
        self._lock = threading.Lock()
        self._app = self._new_app()

    @property
    def client_id(self) -> str:
        return str(self._settings.dataverse_client_id or self._settings.graph_client_id)

    def _credential(self) -> str | dict[str, str]:
        s = self._settings
        own = s.dataverse_client_id is not None
        cert = s.dataverse_client_cert if own else s.graph_client_cert
        if cert is not None:
            thumbprint = (
                s.dataverse_client_cert_thumbprint if own else s.graph_client_cert_thumbprint
            )
            return {"private_key": Path(cert).read_text(), "thumbprint": str(thumbprint)}
        secret = s.dataverse_client_secret if own else s.graph_client_secret
        assert secret is not None
        return secret.get_secret_value()

    def _new_app(self) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=self._credential(),
            authority=authority_url(self._settings, str(self._settings.tenant_id)),
            http_client=self._http,
            instance_discovery=None if self._settings.authority_is_microsofts else False,
        )

    def token(self) -> str:
        with self._lock:
            result: dict[str, Any] | None = self._app.acquire_token_for_client(
                scopes=[self._settings.dataverse_scope]
            )
        if result and "access_token" in result:
            return str(result["access_token"])
        raise sign_in_error(result or {}, "Dataverse (app-only)")

    def invalidate(self) -> None:
        with self._lock:  # a new app has an empty cache: the next token is a fresh one
            self._app = self._new_app()


class DataverseHttp:
    """The environment's Web API: ``get_json`` with the OData 4.0 headers and a Prefer."""

    service = SERVICE

    def __init__(self, http: PwaHttp, page_size: int) -> None:
        self._http = http
        self.page_size = page_size
        self.api_url = f"{http.site_url}{API_PATH}"

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    def get_json(self, url: str, *, prefer: str | None = None) -> dict[str, Any]:
        headers = dict(ODATA_HEADERS)
        if prefer:
            headers["Prefer"] = prefer
        return self._http.request_json("GET", url, headers=headers)

    def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._http.request_json(
            "POST",
            url,
            json_body=body,
            headers={**ODATA_HEADERS, "Content-Type": "application/json"},
        )


def open_dataverse(
    settings: Settings, http: httpx.Client, *, stop: threading.Event | None = None
) -> DataverseHttp:
    settings.require_dataverse()
    assert settings.dataverse_url is not None
    tokens = DataverseAppTokens(settings, http)
    edge = PwaHttp(
        http,
        settings.dataverse_url,
        BearerAuth(tokens),
        stop=stop,
        service=SERVICE,
        metric_service=METRIC_SERVICE,
    )
    return DataverseHttp(edge, settings.dataverse_page_size)


@dataclass
class Collection:
    rows: list[dict[str, Any]]
    delta_link: str | None  # with change tracking: where the next changes are read


def read_collection(http: DataverseHttp, url: str, *, track: bool = False) -> Collection:
    """Every row of a query, following ``@odata.nextLink`` exactly as given (Dataverse's
    paging cookie lives in it; ``$skip`` is not supported), with the same ``Prefer`` on every
    page; with ``track``, change tracking's ``@odata.deltaLink`` from the last page."""
    prefer = f"odata.maxpagesize={http.page_size}"
    if track:
        prefer = f"odata.track-changes,{prefer}"
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    next_url: str | None = url
    delta_link = None
    while next_url is not None:
        if next_url in seen or len(seen) >= MAX_PAGES:
            raise PermanentApiError(f"{SERVICE} paging does not end at {next_url}")
        seen.add(next_url)
        page = http.get_json(next_url, prefer=prefer)
        if not isinstance(page.get("value"), list):
            raise PermanentApiError(f"{SERVICE} answered a collection query without 'value'")
        rows.extend(page["value"])
        # Absolute as Dataverse writes them; a relative one is taken against the page.
        page_url = next_url
        next_url = _link(page_url, page.get("@odata.nextLink"))
        delta_link = _link(page_url, page.get("@odata.deltaLink")) or delta_link
    return Collection(rows, delta_link)


def _link(page_url: str, link: object) -> str | None:
    return urljoin(page_url, str(link)) if link else None
