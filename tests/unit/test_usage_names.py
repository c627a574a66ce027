"""``pwasync usage``: task and project names beside the ids, from the plans."""

import uuid
from datetime import UTC, datetime, timedelta

from services.ledger.endpoints import Endpoint, HeldTask
from services.ledger.usage import Names, usage_report, usage_table
from services.ops.plans import plan_names
from tests.unit.fakes import ListFeed

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def test_the_plans_name_each_task_reading_each_project_once():
    feed = ListFeed()
    berlin, crm = feed.project("Office Relocation Berlin"), feed.project("CRM Rollout")
    survey, go_live = feed.task(berlin, "Site survey"), feed.task(berlin, "Go-live")
    training = feed.task(crm, "User training")
    deleted = str(uuid.uuid4())
    names = plan_names(
        feed,
        [
            (survey.task_id, berlin.project_id),
            (go_live.task_id, berlin.project_id),
            (training.task_id, crm.project_id),
            (deleted, berlin.project_id),
            (str(uuid.uuid4()), str(uuid.uuid4())),
        ],
    )
    assert names[str(survey.task_id)] == Names("Site survey", "Office Relocation Berlin")
    assert names[str(training.task_id)] == Names("User training", "CRM Rollout")
    assert names[str(deleted)] == Names(None, "Office Relocation Berlin")
    assert sorted(map(str, feed.tasks_read)) == sorted(
        [str(berlin.project_id), str(crm.project_id)]
    )


def test_the_report_keeps_its_fields_and_adds_the_names():
    task, other, project = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    endpoint = Endpoint(task, project, NOW - timedelta(days=1), NOW + timedelta(days=29))
    held = HeldTask(other, project, NOW, task_name="Go-live (held)", project_name="Berlin")
    report = usage_report(
        "default",
        [endpoint],
        2,
        held=[held],
        history={},
        now=NOW,
        names={str(task): Names("Site survey", "Office Relocation Berlin")},
    )
    assert report["tasks"] == [
        {
            "task_id": str(task),
            "project_id": str(project),
            "allocated_at": "2026-12-01T04:00:00Z",
            "expires_at": "2026-12-31T04:00:00Z",
            "task_name": "Site survey",
            "project_name": "Office Relocation Berlin",
        }
    ]
    # A held task the plans did not name keeps the names of its held snapshot.
    assert report["held"][0]["task_name"] == "Go-live (held)"
    assert report["names_unreadable"] is None
    table = usage_table(report)
    assert f"{task}  2026-12-01T04:00:00Z  2026-12-31T04:00:00Z  Site survey (Office Relo" in table
    assert f"  {other}  since 2026-12-02T04:00:00Z  Go-live (held) (Berlin)" in table


def test_without_the_plans_the_ids_stand_alone_and_one_line_says_why():
    task, project = str(uuid.uuid4()), str(uuid.uuid4())
    endpoint = Endpoint(task, project, NOW, NOW + timedelta(days=30))
    report = usage_report(
        "default",
        [endpoint],
        None,
        held=[],
        history={},
        now=NOW,
        names_unreadable="the plans could not be read here (PWASYNC_PWA_URL is not set)",
    )
    assert report["tasks"][0]["task_name"] is None and report["tasks"][0]["project_name"] is None
    table = usage_table(report)
    assert f"? ({project})" in table
    assert table.splitlines()[-1] == (
        "names not shown: the plans could not be read here (PWASYNC_PWA_URL is not set)"
    )
