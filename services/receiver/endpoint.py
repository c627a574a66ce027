"""What the receiver answers Project Server, decided apart from the HTTP server that sends it.

Only ``POST /project-server/events/{secret}`` with a SOAP publish call for our site is
accepted; the answer is sent before any work, because the server's call has a timeout and no
retry. Everything else is refused with nothing published: a wrong path or secret 404, a body
that is not a publish call or is another site's 400, a body over the limit 413. The secret is
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.receiver.soap import PublishedCall, RefusedCall, answer, parse_call

PATH_PREFIX = "/project-server/events/"
#: A publish call is a few kilobytes (the reference's PSContextInfo and event arguments).
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    call: PublishedCall | None = None
    refusal: RefusedCall | None = None


def refused(status: int, reason: str, detail: str) -> Answer:
    return Answer(status, f"{reason}\n".encode(), refusal=RefusedCall(reason, detail))


@dataclass(frozen=True)
class OurSite:
    """The PWA site whose calls we act on: its URL (settings) and, once ``events register``
    has read it, its site collection id (SiteGuid in the call's context)."""

    pwa_url: str | None
    site_id: Callable[[], uuid.UUID | None] = lambda: None

    def refusal(self, call: PublishedCall) -> str | None:
        expected = self.site_id()
        if call.site_id is not None and expected is not None and call.site_id != expected:
            return f"SiteGuid {call.site_id} is not our PWA's site collection {expected}"
        if call.wss_url and self.pwa_url and _host(call.wss_url) != _host(self.pwa_url):
            # A project's site lives on the farm's web application: another host is another farm.
            return f"WssUrl host {_host(call.wss_url)!r} is not the PWA's host"
        return None


class CallPolicy:
    def __init__(self, secret: str, site: OurSite) -> None:
        self._secret = secret.encode()
        self._site = site

    def answer_post(self, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        path = path.split("?", 1)[0]
        if not path.startswith(PATH_PREFIX):
            return refused(404, "path", "not the publish receiver's path")
        given = path[len(PATH_PREFIX) :].strip("/").encode()
        if not hmac.compare_digest(given, self._secret):
            return refused(404, "secret", "the path's secret is wrong")
        try:
            call = parse_call(body, headers.get("content-type", ""), headers.get("soapaction"))
        except RefusedCall as exc:
            return refused(400, exc.reason, exc.detail)
        site_refusal = self._site.refusal(call)
        if site_refusal:
            return refused(400, "site", site_refusal)
        envelope, content_type = answer(call)
        return Answer(200, envelope, content_type, call=call)


def _host(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "").lower()
