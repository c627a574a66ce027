import uuid
from datetime import datetime

from common.mailboxes import MailboxPolicy
from services.poller.selection import SkipReason, project_skip_reason, select_tasks
from services.poller.source import AssignmentRow, ProjectRow, ResourceRow, TaskRow

PROJECT = uuid.uuid4()


def task(
    name,
    *,
    flagged=True,
    summary=False,
    project_summary=False,
    start=datetime(2026, 12, 1, 8),
    finish=datetime(2026, 12, 2, 17),
):
    return TaskRow(PROJECT, uuid.uuid4(), name, start, finish, summary, project_summary, flagged)


def test_only_flagged_leaf_tasks_with_sane_dates_are_selected():
    tasks = [
        task("leaf"),
        task("unflagged", flagged=False),
        task("summary", summary=True),
        task("project summary", summary=True, project_summary=True),
        task("no start", start=None),
        task("no finish", finish=None),
        task("backwards", start=datetime(2026, 12, 3), finish=datetime(2026, 12, 1)),
        task("milestone", start=datetime(2026, 12, 1, 9), finish=datetime(2026, 12, 1, 9)),
        task("year 1", start=datetime(1, 1, 1), finish=datetime(2026, 12, 1)),
        task("year 9999", finish=datetime(9999, 12, 31, 23, 59)),
        task("before 1984", start=datetime(1983, 12, 31, 23), finish=datetime(2026, 12, 1)),
        task("after 2149", finish=datetime(2150, 1, 1)),
        task("first and last day", start=datetime(1984, 1, 1), finish=datetime(2149, 12, 31, 17)),
    ]
    selection = select_tasks(tasks, [], {})
    assert [s.task.name for s in selection.selected] == [
        "leaf",
        "milestone",
        "first and last day",
    ]
    assert {s.task.name: s.reason for s in selection.skipped} == {
        "unflagged": SkipReason.NOT_FLAGGED,
        "summary": SkipReason.SUMMARY_TASK,
        "project summary": SkipReason.PROJECT_SUMMARY_TASK,
        "no start": SkipReason.NO_START,
        "no finish": SkipReason.NO_FINISH,
        "backwards": SkipReason.FINISH_BEFORE_START,
        "year 1": SkipReason.DATE_OUT_OF_RANGE,  # outside the dates Project can schedule
        "year 9999": SkipReason.DATE_OUT_OF_RANGE,
        "before 1984": SkipReason.DATE_OUT_OF_RANGE,
        "after 2149": SkipReason.DATE_OUT_OF_RANGE,
    }
    assert selection.skip_counts()["not_flagged"] == 1


def test_assignees_come_with_their_resource_email_once_each():
    leaf = task("leaf")
    alice, bob, generic = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assignments = [
        AssignmentRow(leaf.task_id, alice, "Alice"),
        AssignmentRow(leaf.task_id, alice, "Alice"),  # two assignment rows, one person
        AssignmentRow(leaf.task_id, bob, "Bob"),
        AssignmentRow(leaf.task_id, generic, "Crane"),
    ]
    resources = {
        alice: ResourceRow(alice, "Alice A.", "alice@contoso.com"),
        bob: ResourceRow(bob, "Bob B.", None),
    }
    [selected] = select_tasks([leaf], assignments, resources).selected
    by_id = {a.resource_id: a for a in selected.assignees}
    assert len(selected.assignees) == 3
    assert by_id[alice].email == "alice@contoso.com" and by_id[alice].name == "Alice A."
    assert by_id[bob].email is None
    assert by_id[generic].email is None and by_id[generic].name == "Crane"


def test_master_templates_and_admin_projects_are_skipped_whole():
    def project(kind):
        return ProjectRow(uuid.uuid4(), "p", kind, datetime(2026, 1, 1))

    assert project_skip_reason(project(0)) is None
    assert project_skip_reason(project(5)) is None  # an inserted subproject is a real plan
    assert project_skip_reason(project(6)) is SkipReason.MASTER_PROJECT
    assert project_skip_reason(project(1)) is SkipReason.TEMPLATE_PROJECT
    assert project_skip_reason(project(7)) is SkipReason.ADMINISTRATIVE_PROJECT


def test_an_assignee_whose_address_may_not_receive_events_is_refused_with_the_reason():
    leaf = task("leaf")
    alice, mallory, typo, nobody = (uuid.uuid4() for _ in range(4))
    assignments = [AssignmentRow(leaf.task_id, r, "x") for r in (alice, mallory, typo, nobody)]
    resources = {
        alice: ResourceRow(alice, "Alice", "alice@contoso.com"),
        mallory: ResourceRow(mallory, "Mallory", "mallory@outside.example"),
        typo: ResourceRow(typo, "Typo", "typo@contoso,com"),
        nobody: ResourceRow(nobody, "Crane", None),
    }
    policy = MailboxPolicy(frozenset({"contoso.com"}))
    selection = select_tasks([leaf], assignments, resources, mailboxes=policy)
    [selected] = selection.selected
    refused = {a.resource_id: a.refused.code for a in selected.assignees if a.refused}
    assert refused == {mallory: "mailbox_domain_not_allowed", typo: "invalid_email_address"}
    # Only those that may receive events keep their address for the writer.
    assert {a.resource_id for a in selected.deliverable} == {alice, nobody}
    assert selection.refusal_counts() == {
        "mailbox_domain_not_allowed": 1,
        "invalid_email_address": 1,
    }
