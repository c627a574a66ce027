"""Reading basic Planner plans and their assignees from Microsoft Graph (app-only).

The HTTP edge is the PWA's (``PwaHttp``: bounded retries, 429/503 ``Retry-After`` waits, a stop
request ends a wait, the token never leaves Graph's origin) with a Graph app token
(``Tasks.Read.All``, ``User.Read.All``). What each read costs: a configured plan is one request
(``/planner/plans/{id}``), a group one for all its plans, a plan's labels one
(``/details``) and its tasks one per page of 400 (Planner's fixed page size: no ``$top``). An
assignee's mailbox is one ``/users/{id}`` request, kept for an hour. No ``If-None-Match``:
nothing public says Planner answers 304, so a plan's change is found by comparing the ETags of
its tasks (``planner_rows.plan_version``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

from common.errors import PermanentApiError
from common.logging import get_logger
from services.poller.paging import MAX_PAGES
from services.poller.pwa_http import PwaHttp
from services.poller.source import ResourceRow

log = get_logger(__name__)

SERVICE = "Microsoft Graph (Planner)"
METRIC_SERVICE = "planner"  # the HTTP metrics' service label (the writer's Graph is "graph")
JSON = {"Accept": "application/json"}
USER_FIELDS = "id,displayName,mail,userPrincipalName"
#: How long an assignee's address is trusted before it is looked up again.
USER_TTL_SECONDS = 3600.0


@dataclass(frozen=True)
class PlanRef:
    plan_id: str
    title: str


class PlanGone(Exception):
    """The plan answered 404: deleted (or never there). Its tasks' events go."""


class PlannerGraph:
    def __init__(self, http: PwaHttp, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self.base_url = http.site_url  # PWASYNC_GRAPH_URL
        self._users: dict[str, tuple[float, ResourceRow]] = {}
        self._clock = clock

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    def get(self, path: str) -> dict[str, Any]:
        return self._http.request_json("GET", f"{self.base_url}{path}", headers=JSON)

    # --- plans -------------------------------------------------------------------------

    def plan(self, plan_id: str) -> PlanRef:
        try:
            body = self.get(f"/planner/plans/{quote(plan_id, safe='')}")
        except PermanentApiError as exc:
            if exc.status == 404:
                raise PlanGone(plan_id) from None
            raise
        return PlanRef(str(body.get("id") or plan_id), str(body.get("title") or ""))

    def group_plans(self, group_id: str) -> list[PlanRef] | None:
        """Every plan of a group; None when the group answers 404 (deleted or mistyped)."""
        try:
            rows = list(self._pages(f"/groups/{quote(group_id, safe='')}/planner/plans"))
        except PermanentApiError as exc:
            if exc.status == 404:
                return None
            raise
        return [PlanRef(str(r["id"]), str(r.get("title") or "")) for r in rows if r.get("id")]

    def details(self, plan_id: str) -> dict[str, Any]:
        return self._plan_read(plan_id, f"/planner/plans/{quote(plan_id, safe='')}/details")

    def tasks(self, plan_id: str) -> list[dict[str, Any]]:
        path = f"/planner/plans/{quote(plan_id, safe='')}/tasks"
        try:
            return list(self._pages(path))
        except PermanentApiError as exc:
            if exc.status == 404:
                raise PlanGone(plan_id) from None
            raise

    def task_plan(self, task_id: str) -> str | None:
        try:
            body = self.get(f"/planner/tasks/{quote(task_id, safe='')}")
        except PermanentApiError as exc:
            if exc.status == 404:
                return None
            raise
        return str(body.get("planId") or "") or None

    # --- assignees ---------------------------------------------------------------------

    def cached_user(self, user_id: str) -> ResourceRow | None:
        entry = self._users.get(user_id)
        if entry is None or self._clock() - entry[0] > USER_TTL_SECONDS:
            return None
        return entry[1]

    def users(self, user_ids: set[str]) -> Iterator[ResourceRow]:
        """Each user's display name and mailbox address (``mail``, else the UPN, which Graph
        takes as the calendar's address too); a user no longer in the directory has none."""
        for user_id in sorted(user_ids):
            cached = self.cached_user(user_id)
            if cached is None:
                cached = self._user(user_id)
                self._users[user_id] = (self._clock(), cached)
            yield cached

    def _user(self, user_id: str) -> ResourceRow:
        try:
            body = self.get(f"/users/{quote(user_id, safe='')}?$select={USER_FIELDS}")
        except PermanentApiError as exc:
            if exc.status != 404:
                raise
            log.warning("assignee is not in the directory; no mailbox", user_id=user_id)
            return ResourceRow(user_id, "", None)
        address = str(body.get("mail") or body.get("userPrincipalName") or "").strip()
        return ResourceRow(user_id, str(body.get("displayName") or ""), address or None)

    # --- reading -----------------------------------------------------------------------

    def _plan_read(self, plan_id: str, path: str) -> dict[str, Any]:
        try:
            return self.get(path)
        except PermanentApiError as exc:
            if exc.status == 404:
                raise PlanGone(plan_id) from None
            raise

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every row of a collection, following ``@odata.nextLink`` as Graph gives it."""
        url: str | None = f"{self.base_url}{path}"
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise PermanentApiError(f"{SERVICE} paging does not end at {url}")
            seen.add(url)
            body = self._http.request_json("GET", url, headers=JSON)
            rows = body.get("value")
            if not isinstance(rows, list):
                raise PermanentApiError(f"{SERVICE} answered a collection without 'value'")
            for row in rows:
                if isinstance(row, dict):
                    yield row
                else:  # nothing to key it by: said, and the rest of the page goes on
                    log.error(f"{SERVICE} answered a row that is not an object", row=str(row)[:80])
            link = body.get("@odata.nextLink")
            # Graph's links are absolute; a relative one is taken against the page's URL.
            url = urljoin(url, str(link)) if link else None
