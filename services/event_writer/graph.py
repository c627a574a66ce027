"""Graph at the edge: one request, or up to 20 in one ``$batch``, over HTTP (asyncio).

Only transport lives here: the token, the HTTP call, a refused token refreshed once, and
transport failures translated to ``RetryableApiError``. What a result means is decided in
``graph_protocol``; when and with what a request is sent, in ``dispatcher``.

The token comes from a blocking ``TokenSource`` (MSAL): it is fetched in a worker thread and
reused for ``TOKEN_REUSE_SECONDS``, so the event loop neither blocks on a sign-in nor pays
MSAL's cache lookup per request. A token Graph refuses is dropped at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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

#: Far below a token's life (an hour; MSAL renews five minutes before the end).
TOKEN_REUSE_SECONDS = 60.0


class LoopTokens:
    """A ``TokenSource`` for an event loop: one fetch at a time, in a thread."""

    def __init__(self, source: TokenSource, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._token: str | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token is not None and self._clock() - self._fetched < TOKEN_REUSE_SECONDS:
            return self._token
        async with self._lock:
            if self._token is None or self._clock() - self._fetched >= TOKEN_REUSE_SECONDS:
                self._token = await asyncio.to_thread(self._source.token)
                self._fetched = self._clock()
            return self._token

    def invalidate(self, refused: str) -> None:
        """Graph refused ``refused``: the next request gets a fresh one (unless another
        request has fetched one since)."""
        if self._token == refused:
            self._token = None
            self._source.invalidate()


class GraphTransport:
    def __init__(self, http: httpx.AsyncClient, base_url: str, tokens: LoopTokens) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = tokens

    async def send(self, request: GraphRequest) -> GraphResult:
        response = await self._post_or_call(
            request.method,
            f"{self._base}{request.relative_url}",
            json=request.body,
            headers=request.headers,
        )
        return _result(response)

    async def send_batch(self, requests: list[GraphRequest]) -> list[GraphResult]:
        """Per-item results in request order. A failed batch as a whole fails every item."""
        response, token = await self._post_or_call_with_token(
            "POST", f"{self._base}/$batch", json=batch_body(requests)
        )
        if response.status_code != 200:
            return [_result(response)] * len(requests)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        results = batch_results(len(requests), payload)
        if any(result.status == 401 for result in results):
            self._tokens.invalidate(token)  # the items are sent again with a fresh token
        return results

    async def _post_or_call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response, _ = await self._post_or_call_with_token(method, url, **kwargs)
        return response

    async def _post_or_call_with_token(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[httpx.Response, str]:
        refreshed = False
        if kwargs.get("json") is None:
            kwargs.pop("json", None)
        while True:
            token = await self._tokens.token()
            sent = {**(headers or {}), "Authorization": f"Bearer {token}"}
            with transport_errors(SERVICE):
                response = await self._http.request(method, url, headers=sent, **kwargs)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._tokens.invalidate(token)
                continue
            return response, token


def _result(response: httpx.Response) -> GraphResult:
    body: Any = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"code": None, "message": response.text.strip()[:300]}}
    headers = {k.lower(): v for k, v in response.headers.items()}
    return GraphResult(response.status_code, body, headers)
