"""Graph at the edge: one request, or up to 20 in one ``$batch``, over HTTP (aiohttp).

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

import aiohttp
import orjson

from common.http import aiohttp_errors
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
    def __init__(self, http: aiohttp.ClientSession, base_url: str, tokens: LoopTokens) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = tokens

    async def send(self, request: GraphRequest) -> GraphResult:
        result, _ = await self._call(
            request.method,
            f"{self._base}{request.relative_url}",
            request.body,
            request.headers,
        )
        return result

    async def send_batch(self, requests: list[GraphRequest]) -> list[GraphResult]:
        """Per-item results in request order. A failed batch as a whole fails every item."""
        result, token = await self._call("POST", f"{self._base}/$batch", batch_body(requests))
        if result.status != 200:
            return [result] * len(requests)
        results = batch_results(len(requests), result.body)
        if any(item.status == 401 for item in results):
            self._tokens.invalidate(token)  # the items are sent again with a fresh token
        return results

    async def _call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None = None,
    ) -> tuple[GraphResult, str]:
        refreshed = False
        data = None if body is None else orjson.dumps(body)
        while True:
            token = await self._tokens.token()
            sent = {**(headers or {}), "Authorization": f"Bearer {token}"}
            if data is not None:
                sent["Content-Type"] = "application/json"
            with aiohttp_errors(SERVICE):
                async with self._http.request(method, url, data=data, headers=sent) as response:
                    content = await response.read()
                    result = _result(response, content)
            if result.status == 401 and not refreshed:
                refreshed = True
                self._tokens.invalidate(token)
                continue
            return result, token


def _result(response: aiohttp.ClientResponse, content: bytes) -> GraphResult:
    body: Any = None
    if content:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            text = content.decode("utf-8", "replace").strip()[:300]
            body = {"error": {"code": None, "message": text}}
    headers = {k.lower(): v for k, v in response.headers.items()}
    return GraphResult(response.status, body, headers)
