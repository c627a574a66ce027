"""Graph at the edge: one request, or up to 20 in one ``$batch``, over HTTP.

Only transport lives here: the token, the HTTP call, a refused token refreshed once, and
transport failures translated to ``RetryableApiError``. What a result means is decided in
``graph_protocol``; when and with what a request is sent, in ``dispatcher``.
"""

from __future__ import annotations

from typing import Any

import httpx

from common.http import transport_errors
from common.identity import TokenSource
from services.event_writer.graph_protocol import (
    SERVICE,
    GraphRequest,
    GraphResult,
    batch_body,
    batch_results,
)


class GraphTransport:
    def __init__(self, http: httpx.Client, base_url: str, tokens: TokenSource) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = tokens

    def send(self, request: GraphRequest) -> GraphResult:
        response = self._post_or_call(
            request.method,
            f"{self._base}{request.relative_url}",
            json=request.body,
            headers=request.headers,
        )
        return _result(response)

    def send_batch(self, requests: list[GraphRequest]) -> list[GraphResult]:
        """Per-item results in request order. A failed batch as a whole fails every item."""
        response = self._post_or_call("POST", f"{self._base}/$batch", json=batch_body(requests))
        if response.status_code != 200:
            return [_result(response)] * len(requests)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        results = batch_results(len(requests), payload)
        if any(result.status == 401 for result in results):
            self._tokens.invalidate()  # the items are sent again with a fresh token
        return results

    def _post_or_call(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        refreshed = False
        while True:
            headers = {**(headers or {}), "Authorization": f"Bearer {self._tokens.token()}"}
            if kwargs.get("json") is None:
                kwargs.pop("json", None)
            with transport_errors(SERVICE):
                response = self._http.request(method, url, headers=headers, **kwargs)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._tokens.invalidate()
                continue
            return response


def _result(response: httpx.Response) -> GraphResult:
    body: Any = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"code": None, "message": response.text.strip()[:300]}}
    headers = {k.lower(): v for k, v in response.headers.items()}
    return GraphResult(response.status_code, body, headers)
