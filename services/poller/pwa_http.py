"""Authenticated requests to the PWA site, with the behaviour SharePoint expects of a client.

- a bearer token from the configured sign-in; a 401 forgets the token and tries once more;
- 429 and 503 honour ``Retry-After`` (throttled calls count against the tenant's quota, and
  ignoring it leads to a block), with a bounded number of waits, then a RetryableApiError;
- timeouts and resets are retried a few times with jittered backoff;
- every other failure becomes a PermanentApiError whose text says what the server said.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from common.errors import PermanentApiError, RetryableApiError
from common.http import api_error, transport_errors
from common.identity import TokenSource
from common.logging import get_logger

log = get_logger(__name__)

VERBOSE_JSON = "application/json;odata=verbose"
SERVICE = "Project Online"


class PwaHttp:
    def __init__(
        self,
        http: httpx.Client,
        site_url: str,
        tokens: TokenSource,
        *,
        max_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http
        self.site_url = site_url.rstrip("/")
        self._origin = _origin(self.site_url)
        self._tokens = tokens
        self._max_attempts = max_attempts
        self._sleep = sleep

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
            raise PermanentApiError(f"{SERVICE}: refusing to follow a link off the site: {url}")
        refreshed_token = False
        for attempt in range(1, self._max_attempts + 1):
            request_headers = {
                "Accept": VERBOSE_JSON,
                "Authorization": f"Bearer {self._tokens.token()}",
                **(headers or {}),
            }
            try:
                with transport_errors(SERVICE):
                    response = self._http.request(
                        method, url, headers=request_headers, json=json_body
                    )
            except RetryableApiError as exc:
                if attempt == self._max_attempts:
                    raise
                self._wait(attempt, None, str(exc))
                continue
            if response.status_code == 401 and not refreshed_token:
                refreshed_token = True
                self._tokens.invalidate()
                continue
            if response.is_success:
                return _json(response)
            error = api_error(SERVICE, response, _error_text(response))
            if isinstance(error, RetryableApiError) and attempt < self._max_attempts:
                self._wait(attempt, error.retry_after, str(error))
                continue
            raise error
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: float | None, reason: str) -> None:
        delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2**attempt)
        delay *= random.uniform(1.0, 1.2)  # jitter, never shorter than the server asked
        log.warning("Project Online request failed; waiting", reason=reason, wait_seconds=delay)
        self._sleep(delay)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise PermanentApiError(
            f"{SERVICE} answered {response.status_code} with a body that is not JSON "
            f"(content type {response.headers.get('content-type', 'none')})"
        ) from None
    if not isinstance(data, dict):
        raise PermanentApiError(f"{SERVICE} answered with a JSON {type(data).__name__}")
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
