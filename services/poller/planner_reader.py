"""The ``PlanSource`` of basic Planner plans (``PWASYNC_SOURCE=planner``).

Planner has no change notifications and its delta query is beta only, and a plan carries no
modified date. So every poll lists the plans (``PWASYNC_PLANNER_PLANS``, and every plan of
``PWASYNC_PLANNER_GROUPS``) and reads each one's labels and task pages, and lists it with a
version: the digest of its title, its label's categories and its tasks' ETags. The sync's
change detection compares versions: an unchanged plan costs its constant few requests and
produces nothing; a changed one is diffed task by task from the rows already read (no second
read). A plan that answers 404 (deleted) or leaves the settings is not listed, so its tasks'
events go, behind the deletion guard like every removal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from common.identity import GraphAppTokens
from common.logging import get_logger
from common.settings import Settings
from services.poller.planner_graph import METRIC_SERVICE, SERVICE, PlanGone, PlannerGraph, PlanRef
from services.poller.planner_rows import PlannerTask, label_keys, plan_version, task_row
from services.poller.pwa_auth import BearerAuth
from services.poller.pwa_http import PwaHttp
from services.poller.pwa_time import to_pwa_wall_clock
from services.poller.source import (
    AssignmentRow,
    ProjectListing,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnreadableRow,
)

log = get_logger(__name__)


class PlannerReader:
    api = "planner"
    #: Graph answers the plans themselves: nothing lags behind them.
    reread_after = timedelta(0)

    def __init__(
        self,
        graph: PlannerGraph,
        *,
        plan_ids: list[str],
        group_ids: list[str],
        label: str,
        zone: ZoneInfo,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.graph = graph
        self._plan_ids = plan_ids
        self._group_ids = group_ids
        self._label = label
        self._zone = zone
        self._clock = clock
        self._read: dict[str, list[PlannerTask]] = {}  # plan id -> tasks, as last listed
        self._unlabelled_seen: set[str] = set()
        self._last_listed = datetime.min  # wall clock of the last listing, kept increasing
        self._date_form_seen = False  # the first raw dates are logged, to settle their form

    @property
    def requests_made(self) -> int:
        return self.graph.requests_made

    # --- the seam ----------------------------------------------------------------------

    def projects(self, *, project_ids: list[str] | None = None) -> Iterator[ProjectListing]:
        self._read = {}
        for ref in self.plan_refs(project_ids):
            try:
                yield self._listing(ref)
            except PlanGone:
                log.info("Planner plan not found; its tasks' events go", plan_id=ref.plan_id)

    def tasks(self, project_id: str) -> Iterator[TaskRow | UnreadableRow]:
        for task in self._tasks_of(project_id):
            yield task.row

    def assignments(self, project_id: str) -> Iterator[AssignmentRow]:
        for task in self._tasks_of(project_id):
            if isinstance(task.row, TaskRow):
                for user_id in task.assignees:
                    yield AssignmentRow(
                        task_id=task.row.task_id,
                        resource_id=user_id,
                        resource_name="",
                        resource=self.graph.cached_user(user_id),
                    )

    def resources(self, resource_ids: set[str]) -> Iterator[ResourceRow]:
        return self.graph.users(resource_ids)

    def task_projects(self, task_ids: list[str]) -> set[str]:
        found = (self.graph.task_plan(task_id) for task_id in task_ids)
        return {plan_id for plan_id in found if plan_id}

    # --- plans -------------------------------------------------------------------------

    def plan_refs(self, only: list[str] | None = None) -> list[PlanRef]:
        """The configured plans and every plan of the configured groups (once each)."""
        wanted = set(only) if only is not None else None
        refs: dict[str, PlanRef] = {}
        for group_id in self._group_ids:
            plans = self.graph.group_plans(group_id)
            if plans is None:
                log.warning(
                    "Planner group not found (deleted, or a mistyped PWASYNC_PLANNER_GROUPS "
                    "entry): it has no plans to sync",
                    group_id=group_id,
                )
                continue
            for ref in plans:
                refs.setdefault(ref.plan_id, ref)
        for plan_id in self._plan_ids:
            if plan_id in refs or (wanted is not None and plan_id not in wanted):
                continue
            try:
                refs[plan_id] = self.graph.plan(plan_id)
            except PlanGone:
                log.warning(
                    "Planner plan not found (deleted, or a mistyped PWASYNC_PLANNER_PLANS entry)",
                    plan_id=plan_id,
                )
        return [ref for ref in refs.values() if wanted is None or ref.plan_id in wanted]

    def _listing(self, ref: PlanRef) -> ProjectRow:
        labels = label_keys(self.graph.details(ref.plan_id), self._label)
        if not labels and ref.plan_id not in self._unlabelled_seen:
            self._unlabelled_seen.add(ref.plan_id)
            log.warning(
                "Planner plan has no label of the configured name; none of its tasks gets "
                "an event (name one of its labels so in Planner)",
                plan_id=ref.plan_id,
                plan=ref.title,
                label=self._label,
            )
        raw = self.graph.tasks(ref.plan_id)
        self._log_date_form(raw)
        self._read[ref.plan_id] = [task_row(ref.plan_id, t, labels, self._zone) for t in raw]
        return ProjectRow(
            project_id=ref.plan_id,
            name=ref.title,
            project_type=0,
            modified=self._listed_at(),
            version=plan_version(ref.title, labels, self._zone, raw),
        )

    def _log_date_form(self, raw: list[dict]) -> None:
        """The first dated task's raw dates, once a process (which instant Planner stores for
        a day picked in its UI is unconfirmed; docs/sources/planner.md)."""
        if self._date_form_seen:
            return
        dated = next((t for t in raw if t.get("dueDateTime") or t.get("startDateTime")), None)
        if dated is not None:
            self._date_form_seen = True
            log.debug(
                "Planner dates as Graph writes them",
                task_id=str(dated.get("id")),
                start=dated.get("startDateTime"),
                due=dated.get("dueDateTime"),
                zone=self._zone.key,
            )

    def _listed_at(self) -> datetime:
        """When a plan was listed, as the zone's wall clock (the revision of what was read).
        It never goes back, not even in the hour a fall-back repeats, so a later read always
        orders after an earlier one of this process."""
        wall = to_pwa_wall_clock(self._clock(), self._zone)
        self._last_listed = max(wall, self._last_listed + timedelta(microseconds=1))
        return self._last_listed

    def _tasks_of(self, plan_id: str) -> list[PlannerTask]:
        if plan_id not in self._read:  # not listed in this run: read it now
            self._listing(self.graph.plan(plan_id))
        return self._read[plan_id]


def open_planner(
    settings: Settings, http: httpx.Client, *, stop: threading.Event | None = None
) -> PlannerReader:
    """The reader of the configured plans, signed in as the Graph app (client credentials)."""
    settings.require_planner()
    edge = PwaHttp(
        http,
        settings.graph_url,
        BearerAuth(GraphAppTokens(settings, http)),
        stop=stop,
        service=SERVICE,
        metric_service=METRIC_SERVICE,
    )
    return PlannerReader(
        PlannerGraph(edge),
        plan_ids=settings.planner_plan_ids,
        group_ids=settings.planner_group_ids,
        label=settings.create_event_label,
        zone=settings.pwa_zone,
    )
