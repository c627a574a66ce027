"""Authenticated requests to the PWA site, with the behaviour SharePoint expects of a client.

- authentication by an ``httpx.Auth`` of ``pwa_auth`` (bearer token or NTLM);
- 429 and 503 honour ``Retry-After`` (throttled calls count against the tenant's quota, and
  ignoring it leads to a block): at most ``max_attempts`` tries, each wait jittered upwards
  (never shorter than asked) and at most ``max_wait_seconds``; a server asking for longer
  gets a RetryableApiError at once, and the ack policy retries the whole run in a later tier
  (the run resumes where it stopped, project by project);
- timeouts and resets are retried the same bounded way, with exponential backoff and jitter;
- a stop request (SIGTERM) ends a wait at once with ``Stopping``;
- on premises, SharePoint's HTTP throttling answers 503 with ``X-SharePointHealthScore`` 10
  (with or without ``Retry-After``): waited out like any 503;
- every other failure becomes a PermanentApiError whose text names what answered ("Project
  Server answered 404 …") and says what the server said.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from common import metrics
from common.errors import PermanentApiError, RetryableApiError, Stopping
from common.http import api_error, transport_errors
from common.logging import get_logger
from services.poller.pwa_connections import ConnectionLeases

log = get_logger(__name__)

VERBOSE_JSON = "application/json;odata=verbose"
ONLINE = "Project Online"
ON_PREMISES = "Project Server"
#: The ``service`` label of the HTTP metrics for PWA; each plan source passes its own
#: (``dataverse``, ``planner``), so throttling is alerted on and graphed per source.
METRIC_SERVICE = "pwa"
#: SharePoint's health score at which it refuses work (MS-WSSHP): the server is overloaded.
BUSY_HEALTH_SCORE = 10


class PwaHttp:
    def __init__(
        self,
        http: httpx.Client,
        site_url: str,
        auth: httpx.Auth,
        *,
        max_attempts: int = 5,
        max_wait_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        service: str = ONLINE,
        metric_service: str = METRIC_SERVICE,
        connections: ConnectionLeases | None = None,
    ) -> None:
        """``connections``: where requests take a client of one connection each (a sign-in
        that authenticates connections); None: every request goes through ``http``."""
        self._http = http
        self._connections = connections
        self.service = service  # what answered, as error lines name it
        self.metric_service = metric_service
        self.site_url = site_url.rstrip("/")
        self._origin = _origin(self.site_url)
        self._auth = auth
        self._max_attempts = max_attempts
        self._max_wait = max_wait_seconds
        self._sleep = sleep
        self._stop = stop
        self.requests_made = 0  # calls, for run summaries and benchmarks

    def same_origin(self, url: str) -> bool:
        return _origin(url) == self._origin

    def get_json(self, url: str) -> dict[str, Any]:
        return self.request_json("GET", url)

    def request_json(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if not self.same_origin(url):
            # Never send the PWA bearer token anywhere else, whatever a next link says.
            raise PermanentApiError(
                f"{self.service}: refusing to follow a link off the site: {url}"
            )
        for attempt in range(1, self._max_attempts + 1):
            request_headers = {"Accept": VERBOSE_JSON, **(headers or {})}
            self.requests_made += 1
            try:
                with transport_errors(self.service), self._client() as client:
                    response = client.request(
                        method, url, headers=request_headers, json=json_body, auth=self._auth
                    )
            except RetryableApiError as exc:
                metrics.HTTP_REQUESTS.labels(self.metric_service, method, "error").inc()
                if attempt == self._max_attempts:
                    raise
                self._wait(attempt, None, str(exc))
                continue
            metrics.HTTP_REQUESTS.labels(
                self.metric_service, method, str(response.status_code)
            ).inc()
            if response.status_code in (429, 503):
                metrics.THROTTLED.labels(self.metric_service).inc()
            if response.is_success:
                return _json(response, self.service)
            error = api_error(self.service, response, _error_text(response))
            if _server_busy(response):
                error = RetryableApiError(
                    f"{error} (SharePoint health score {BUSY_HEALTH_SCORE}: the server is busy)",
                    status=error.status,
                    retry_after=error.retry_after,
                )
            retryable = isinstance(error, RetryableApiError)
            if retryable and attempt < self._max_attempts and self._can_wait(error.retry_after):
                self._wait(attempt, error.retry_after, str(error))
                continue
            raise error
        raise AssertionError("unreachable")

    def _client(self) -> contextlib.AbstractContextManager[httpx.Client]:
        if self._connections is None:
            return contextlib.nullcontext(self._http)
        return self._connections.lease()

    def close(self) -> None:
        """Close the clients of ``connections`` (``http`` belongs to the caller)."""
        if self._connections is not None:
            self._connections.close()

    def form_digest(self) -> str:
        """A fresh ``X-RequestDigest`` (SharePoint refuses every write without one)."""
        data = self.request_json("POST", f"{self.site_url}/_api/contextinfo")
        info = data.get("d", data)
        info = info.get("GetContextWebInformation", info)
        digest = info.get("FormDigestValue") if isinstance(info, dict) else None
        if not digest:
            raise PermanentApiError(f"{self.service}: contextinfo returned no FormDigestValue")
        return str(digest)

    def _can_wait(self, retry_after: float | None) -> bool:
        return retry_after is None or retry_after <= self._max_wait

    def _wait(self, attempt: int, retry_after: float | None, reason: str) -> None:
        delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2**attempt)
        # Jitter, never shorter than the server asked: replicas throttled together spread out.
        delay = min(delay * random.uniform(1.0, 1.2), self._max_wait * 1.2)
        log.warning(f"{self.service} request failed; waiting", reason=reason, wait_seconds=delay)
        metrics.THROTTLE_WAIT_SECONDS.labels(self.metric_service).inc(delay)
        if self._stop is None:
            self._sleep(delay)
        elif self._stop.wait(delay):
            # SIGTERM: do not sit out a Retry-After of up to a minute past the drain time.
            raise Stopping(f"stopping while waiting to retry a request ({reason})")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _server_busy(response: httpx.Response) -> bool:
    score = response.headers.get("X-SharePointHealthScore", "").strip()
    return response.status_code == 503 and score.isdigit() and int(score) >= BUSY_HEALTH_SCORE


def _json(response: httpx.Response, service: str) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}  # a DELETE (or a MERGE) answers with no body
    try:
        data = response.json()
    except ValueError:
        raise PermanentApiError(
            f"{service} answered {response.status_code} with a body that is not JSON "
            f"(content type {response.headers.get('content-type', 'none')})"
        ) from None
    if not isinstance(data, dict):
        raise PermanentApiError(f"{service} answered with a JSON {type(data).__name__}")
    return data


def _error_text(response: httpx.Response) -> str:
    """The message of an OData / SharePoint error body, or the start of the raw body."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:300] or response.reason_phrase
    error = data.get("error") or data.get("odata.error") or {}
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, dict):
            message = message.get("value")
        code = error.get("code")
        if message:
            return f"{message} ({code})" if code else str(message)
    return str(data)[:300]
