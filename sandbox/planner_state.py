"""Basic Planner plans as the Planner service keeps them: groups, plans, plan details, tasks.

Ids are Planner's: 28 characters of ``[A-Za-z0-9_-]``, never GUIDs. Every object carries a
version that moves on each edit, and answers it as an opaque weak ETag (``@odata.etag``), as
Planner does. Dates are UTC instants: a date picked in Planner's UI is stored as the instant of
that day's local midnight for the user who picked it (the seed and the control surface use the
tenant's zone for that user; an explicit instant may be given too).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sandbox.state import StateError

#: A plan has 25 labels (category1..category25); the UI shows the first six by default.
CATEGORIES = tuple(f"category{n}" for n in range(1, 26))
#: Planner's task pages are a fixed size the client cannot choose (no $top).
DEFAULT_PAGE_SIZE = 400
_counter = itertools.count(1)


def planner_id(*parts: str) -> str:
    """A stable Planner-style id: 28 URL-safe base64 characters (may hold ``-`` and ``_``)."""
    digest = hashlib.sha256(":".join(("pwasync-planner", *parts)).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:28]


def weak_etag(kind: str, object_id: str, version: int) -> str:
    raw = f"'{version}-{kind} {object_id[:6]}@@@@{next(_counter)}'"
    return 'W/"' + base64.b64encode(raw.encode()).decode() + '"'


@dataclass
class PlannerTask:
    id: str
    plan_id: str
    bucket_id: str
    title: str
    start: datetime | None  # aware, UTC
    due: datetime | None
    created: datetime
    assignees: dict[str, datetime] = field(default_factory=dict)  # user id -> assigned at
    # Every label ever applied: True while applied; taking one off leaves it False.
    categories: dict[str, bool] = field(default_factory=dict)
    percent_complete: int = 0
    etag: str = ""

    def touch(self) -> None:
        self.etag = weak_etag("Task", self.id, next(_counter))


@dataclass
class PlannerPlan:
    id: str
    title: str
    group_id: str
    created: datetime
    category_names: dict[str, str | None] = field(default_factory=dict)
    tasks: dict[str, PlannerTask] = field(default_factory=dict)  # in creation order
    etag: str = ""
    details_etag: str = ""

    def touch(self) -> None:
        self.etag = weak_etag("Plan", self.id, next(_counter))

    def touch_details(self) -> None:
        self.details_etag = weak_etag("PlanDetails", self.id, next(_counter))

    def category_of(self, label: str) -> str:
        """The category key of a label by its name (or a key given as such)."""
        if label in CATEGORIES:
            return label
        for key, name in self.category_names.items():
            if name == label:
                return key
        raise StateError(f"plan {self.title!r} has no label named {label!r}")


@dataclass
class PlannerGroup:
    id: str  # a Microsoft 365 group: its id is a GUID, as Entra objects' ids are
    display_name: str
    plan_ids: list[str] = field(default_factory=list)


@dataclass
class PlannerStore:
    zone: ZoneInfo  # where the seed's users pick their dates
    groups: dict[str, PlannerGroup] = field(default_factory=dict)
    plans: dict[str, PlannerPlan] = field(default_factory=dict)
    page_size: int = DEFAULT_PAGE_SIZE
    throttle_next: int = 0  # the next N Planner requests answer 429
    retry_after_s: float = 1.0
    requests: Counter[str] = field(default_factory=Counter)  # by route name

    # --- lookups ----------------------------------------------------------------------

    def plan(self, plan_id: str) -> PlannerPlan:
        found = self.plans.get(plan_id)
        if found is None:
            raise StateError(f"no plan with id {plan_id}", 404)
        return found

    def task(self, task_id: str) -> PlannerTask:
        for plan in self.plans.values():
            if task_id in plan.tasks:
                return plan.tasks[task_id]
        raise StateError(f"no task with id {task_id}", 404)

    # --- edits ------------------------------------------------------------------------

    def add_plan(
        self, group_id: str, title: str, categories: dict[str, str | None], plan_id: str = ""
    ) -> PlannerPlan:
        group = self.groups.get(group_id)
        if group is None:
            raise StateError(f"no group with id {group_id}", 404)
        plan_id = plan_id or planner_id("plan", group_id, title, str(next(_counter)))
        unknown = set(categories) - set(CATEGORIES)
        if unknown:
            raise StateError(f"labels are category1..category25, not {sorted(unknown)}")
        plan = PlannerPlan(plan_id, title, group_id, _now(), dict(categories))
        plan.touch()
        plan.touch_details()
        self.plans[plan_id] = plan
        group.plan_ids.append(plan_id)
        return plan

    def delete_plan(self, plan_id: str) -> None:
        plan = self.plan(plan_id)
        del self.plans[plan_id]
        self.groups[plan.group_id].plan_ids.remove(plan_id)

    def add_task(self, plan: PlannerPlan, title: str, task_id: str = "") -> PlannerTask:
        task_id = task_id or planner_id("task", plan.id, title, str(next(_counter)))
        task = PlannerTask(
            task_id, plan.id, planner_id("bucket", plan.id), title, None, None, _now()
        )
        plan.tasks[task_id] = task
        task.touch()
        return task

    def delete_task(self, task_id: str) -> None:
        task = self.task(task_id)
        del self.plans[task.plan_id].tasks[task_id]

    def day(self, value: str | None) -> datetime | None:
        """A control-surface date: ``YYYY-MM-DD`` as the UI stores it (local midnight in the
        tenant's zone, as UTC), or an ISO instant with an offset, kept as given."""
        if value is None:
            return None
        if len(value) == 10:
            local = datetime.combine(date.fromisoformat(value), datetime.min.time(), self.zone)
            return local.astimezone(UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise StateError(f"{value!r}: give a date (YYYY-MM-DD) or an instant with an offset")
        return moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)
