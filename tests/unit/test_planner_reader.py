"""The Planner reader over a fake Graph, and change detection by listed versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.poller.changes import ProjectState, plan_projects
from services.poller.planner_graph import PlanGone, PlanRef
from services.poller.planner_reader import PlannerReader
from services.poller.source import ProjectRow, ResourceRow, TaskRow

BERLIN = ZoneInfo("Europe/Berlin")
ADELE = "092db857-76fb-50d5-a54d-2f4b01d882ed"


class FakeGraph:
    def __init__(self) -> None:
        self.plans = {
            "planAAAAAAAAAAAAAAAAAAAAAAAA": ("Launch", {"category3": "Create event"}),
            "planBBBBBBBBBBBBBBBBBBBBBBBB": ("Refresh", {"category1": "Other"}),
        }
        self.groups = {"g1": ["planBBBBBBBBBBBBBBBBBBBBBBBB"]}
        self.task_lists = {
            "planAAAAAAAAAAAAAAAAAAAAAAAA": [
                {
                    "id": "t1",
                    "@odata.etag": "1",
                    "title": "Webinar",
                    "startDateTime": None,
                    "dueDateTime": "2026-12-07T23:00:00Z",
                    "appliedCategories": {"category3": True},
                    "assignments": {ADELE: {}},
                }
            ],
            "planBBBBBBBBBBBBBBBBBBBBBBBB": [],
        }
        self.requests_made = 0
        self.user_reads: list[str] = []

    def plan(self, plan_id):
        self.requests_made += 1
        if plan_id not in self.plans:
            raise PlanGone(plan_id)
        return PlanRef(plan_id, self.plans[plan_id][0])

    def group_plans(self, group_id):
        self.requests_made += 1
        if group_id not in self.groups:
            return None
        return [PlanRef(p, self.plans[p][0]) for p in self.groups[group_id]]

    def details(self, plan_id):
        self.requests_made += 1
        return {"categoryDescriptions": self.plans[plan_id][1]}

    def tasks(self, plan_id):
        self.requests_made += 1
        return self.task_lists[plan_id]

    def cached_user(self, user_id):
        return None

    def users(self, ids):
        self.user_reads.extend(sorted(ids))
        return iter(ResourceRow(i, "Adele", "adele@contoso.com") for i in sorted(ids))

    def task_plan(self, task_id):
        return "planAAAAAAAAAAAAAAAAAAAAAAAA" if task_id == "t1" else None


def reader(graph, plans=("planAAAAAAAAAAAAAAAAAAAAAAAA", "missing"), groups=("g1", "nogroup")):
    return PlannerReader(
        graph,
        plan_ids=list(plans),
        group_ids=list(groups),
        label="create event",
        zone=BERLIN,
        clock=lambda: datetime(2026, 12, 1, 9, tzinfo=UTC),
    )


def test_configured_plans_and_the_groups_plans_are_listed_once_with_versions():
    graph = FakeGraph()
    listed = list(reader(graph).projects())
    assert [row.project_id for row in listed] == [
        "planBBBBBBBBBBBBBBBBBBBBBBBB",
        "planAAAAAAAAAAAAAAAAAAAAAAAA",
    ]
    assert all(isinstance(row, ProjectRow) and row.version for row in listed)
    assert listed[0].modified == datetime(2026, 12, 1, 10)  # our clock, as Berlin wall clock
    # groups: 2, the plan outside the groups: 1 (+1 for the missing one), labels and tasks: 2 each
    assert graph.requests_made == 2 + 2 + 4


def test_the_rows_come_from_the_listing_without_a_second_read():
    graph = FakeGraph()
    source = reader(graph)
    list(source.projects())
    before = graph.requests_made
    [row] = list(source.tasks("planAAAAAAAAAAAAAAAAAAAAAAAA"))
    assert isinstance(row, TaskRow) and row.flagged and row.all_day
    assert (row.start, row.finish) == (datetime(2026, 12, 8), datetime(2026, 12, 9))
    [assignment] = list(source.assignments("planAAAAAAAAAAAAAAAAAAAAAAAA"))
    assert assignment.resource_id == ADELE and assignment.resource is None
    assert [r.email for r in source.resources({ADELE})] == ["adele@contoso.com"]
    assert graph.requests_made == before
    assert source.task_projects(["t1", "nope"]) == {"planAAAAAAAAAAAAAAAAAAAAAAAA"}


def test_a_scoped_listing_reads_only_the_plans_asked_for():
    graph = FakeGraph()
    listed = list(reader(graph).projects(project_ids=["planAAAAAAAAAAAAAAAAAAAAAAAA"]))
    assert [row.project_id for row in listed] == ["planAAAAAAAAAAAAAAAAAAAAAAAA"]


def test_a_tasks_edit_moves_its_plans_version_only():
    graph = FakeGraph()
    first = {row.project_id: row.version for row in reader(graph).projects()}
    graph.task_lists["planAAAAAAAAAAAAAAAAAAAAAAAA"][0]["@odata.etag"] = "2"
    second = {row.project_id: row.version for row in reader(graph).projects()}
    assert first["planAAAAAAAAAAAAAAAAAAAAAAAA"] != second["planAAAAAAAAAAAAAAAAAAAAAAAA"]
    assert first["planBBBBBBBBBBBBBBBBBBBBBBBB"] == second["planBBBBBBBBBBBBBBBBBBBBBBBB"]


def _row(version: str, modified: datetime) -> ProjectRow:
    return ProjectRow("planAAAAAAAAAAAAAAAAAAAAAAAA", "Launch", 0, modified, version=version)


def test_versioned_projects_are_read_when_their_version_moves_not_their_date():
    now = datetime(2026, 12, 1, 10)
    state = ProjectState(now - timedelta(hours=1), 0, now - timedelta(hours=1), version="v1")
    known = {"planAAAAAAAAAAAAAAAAAAAAAAAA": state}
    same = plan_projects(
        [_row("v1", now)], known, sync_start=datetime.min, reread_after=timedelta(0), now=now
    )
    assert same.unchanged == 1 and not same.to_read
    moved = plan_projects(
        [_row("v2", now)], known, sync_start=datetime.min, reread_after=timedelta(0), now=now
    )
    assert [p.version for p in moved.to_read] == ["v2"]
    gone = plan_projects([], known, sync_start=datetime.min, reread_after=timedelta(0), now=now)
    assert gone.deleted == ["planAAAAAAAAAAAAAAAAAAAAAAAA"]


def test_a_project_state_keeps_its_version_and_project_states_stay_as_they_were():
    moment = datetime(2026, 12, 1, 10)
    state = ProjectState(moment, 0, moment, version="v1")
    assert ProjectState.from_json(state.to_json()) == state
    plain = ProjectState(moment, 0, moment)
    assert "version" not in plain.to_json()
    assert ProjectState.from_json(plain.to_json()) == plain


def test_listing_times_never_go_back_even_when_the_wall_clock_does():
    moments = iter(
        [
            datetime(2026, 10, 25, 0, 59, tzinfo=UTC),  # 02:59 CEST, the first 02:59 in Berlin
            datetime(2026, 10, 25, 1, 1, tzinfo=UTC),  # 02:01 CET, the wall clock went back
        ]
    )
    source = PlannerReader(
        FakeGraph(),
        plan_ids=["planAAAAAAAAAAAAAAAAAAAAAAAA"],
        group_ids=[],
        label="Create event",
        zone=BERLIN,
        clock=lambda: next(moments),
    )
    [first] = list(source.projects())
    [second] = list(source.projects())
    assert first.modified == datetime(2026, 10, 25, 2, 59)
    assert second.modified == first.modified + timedelta(microseconds=1)
