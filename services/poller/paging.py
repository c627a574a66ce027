"""Server-driven paging of the PWA's OData collections, shared by both readers.

A collection comes in pages, each with a next link until the last: verbose ``d.__next``,
JSON light ``odata.nextLink`` (OData V3) or ``@odata.nextLink`` (V4 style), absolute or
relative to the page's own URL. Every link is followed until none comes; a link seen twice, or
more pages than any real collection has, ends the read with an error instead of a loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from common.errors import PermanentApiError
from services.poller.pwa_http import PwaHttp

#: A server that keeps sending next links past this many pages is broken.
MAX_PAGES = 10_000
NEXT_LINK_NAMES = ("__next", "odata.nextLink", "@odata.nextLink")


def paged_rows(http: PwaHttp, url: str) -> Iterator[dict[str, Any]]:
    """Every row of a collection, following its next links."""
    next_url: str | None = url
    seen: set[str] = set()
    while next_url is not None:
        if next_url in seen or len(seen) >= MAX_PAGES:
            raise PermanentApiError(f"{http.service} paging does not end at {next_url}")
        seen.add(next_url)
        rows, next_link = page(http.get_json(next_url), http.service)
        yield from rows
        next_url = resolve_link(next_url, next_link) if next_link else None


def resolve_link(page_url: str, link: str) -> str:
    """A next link as a URL. Relative links have been seen, and it is not settled against what
    (the page itself, as RFC 3986 has it; or the service root, as OData's metadata-relative
    rule gives): a relative path is aligned with the page's path at its first segment
    (``Tasks?$skip=…`` under ``…/Projects('…')/Tasks``, ``ProjectServer/Projects?…`` under
    ``…/_api/ProjectServer/Projects``), and joined to the page as RFC 3986 says otherwise."""
    if urlsplit(link).scheme or link.startswith("/"):
        return urljoin(page_url, link)
    first = link.split("?", 1)[0].split("/", 1)[0]
    parts = urlsplit(page_url)
    segments = parts.path.split("/")
    for index in range(len(segments) - 1, -1, -1):
        if _same_segment(segments[index], first):
            base = "/".join(segments[:index]) + "/"
            return urljoin(f"{parts.scheme}://{parts.netloc}{base}", link)
    return urljoin(page_url, link)


def _same_segment(have: str, link_first: str) -> bool:
    # Equal segments align, and so does an entity set's bare name with its keyed form
    # (``Projects`` with ``Projects('…')``), case-insensitively.
    if not have or not link_first:
        return False
    return have.lower() == link_first.lower() or have.split("(", 1)[0].lower() == link_first.lower()


def page(data: dict[str, Any], service: str) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of one page and its next link, in either JSON format."""
    if "d" in data:  # verbose
        body = data["d"]
        if isinstance(body, list):  # OData V1/V2 style without "results"
            return body, None
        return list(body.get("results") or []), _next_link(body)
    if "value" in data:  # JSON light
        return list(data["value"]), _next_link(data)
    raise PermanentApiError(f"{service} answered with neither 'd' nor 'value'")


def inline_rows(entity: dict[str, Any], navigation: str) -> tuple[list[dict[str, Any]], str | None]:
    """An expanded collection inside an entity (verbose ``{"results": […]}``, light a list),
    and its next link when the server paged it (``Tasks@odata.nextLink`` in light)."""
    value = entity.get(navigation)
    if isinstance(value, dict):
        if "__deferred" in value:
            raise PermanentApiError(f"the server did not expand {navigation}")
        return list(value.get("results") or []), _next_link(value)
    light_next = entity.get(f"{navigation}@odata.nextLink") or entity.get(f"{navigation}@nextLink")
    return list(value or []), light_next


def _next_link(body: dict[str, Any]) -> str | None:
    for name in NEXT_LINK_NAMES:
        if body.get(name):
            return str(body[name])
    return None
