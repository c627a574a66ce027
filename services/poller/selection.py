"""Which tasks get events: the poller's deciding logic, as pure functions.

A task is selected when its project can carry events, its flag field is Yes, it is a leaf task
(not a summary, not the project summary), and it has a start and a finish that make sense
(within the dates Project can schedule, the finish not before the start).
Everything left out gets a reason, so an operator can answer "why has this task no event?".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from common.mailboxes import ANY_MAILBOX, MailboxPolicy, Refusal
from common.messages import within_project_dates
from services.poller.source import AssignmentRow, ProjectRow, ResourceRow, TaskRow

#: ProjectType values (ProjectData Int32) whose tasks never get events.
MASTER_PROJECT = 6
TIMESHEET_ADMIN_PROJECT = 7
TEMPLATE_PROJECT = 1


class SkipReason(StrEnum):
    MASTER_PROJECT = "master_project"
    TEMPLATE_PROJECT = "template_project"
    ADMINISTRATIVE_PROJECT = "administrative_project"
    NOT_FLAGGED = "not_flagged"
    PROJECT_SUMMARY_TASK = "project_summary_task"
    SUMMARY_TASK = "summary_task"
    NO_START = "no_start"
    NO_FINISH = "no_finish"
    NO_DUE_DATE = "no_due_date"  # a task whose dates are days (Planner) has no due day
    DATE_OUT_OF_RANGE = "date_out_of_range"
    FINISH_BEFORE_START = "finish_before_start"


_PROJECT_SKIPS = {
    MASTER_PROJECT: SkipReason.MASTER_PROJECT,
    TEMPLATE_PROJECT: SkipReason.TEMPLATE_PROJECT,
    TIMESHEET_ADMIN_PROJECT: SkipReason.ADMINISTRATIVE_PROJECT,
}


@dataclass(frozen=True)
class SelectedAssignee:
    resource_id: str
    name: str
    email: str | None
    refused: Refusal | None = None  # the address may not receive events (common/mailboxes)


@dataclass(frozen=True)
class SelectedTask:
    task: TaskRow
    assignees: tuple[SelectedAssignee, ...]

    @property
    def deliverable(self) -> tuple[SelectedAssignee, ...]:
        """The assignees the task.changed lists: all but the refused ones. An assignee left out
        loses the event it had; a resource without an address is kept (the writer records
        that it has none)."""
        return tuple(a for a in self.assignees if a.refused is None)


@dataclass(frozen=True)
class SkippedTask:
    task: TaskRow
    reason: SkipReason


@dataclass
class Selection:
    selected: list[SelectedTask] = field(default_factory=list)
    skipped: list[SkippedTask] = field(default_factory=list)

    def skip_counts(self) -> Counter[str]:
        return Counter(str(s.reason) for s in self.skipped)

    def refusal_counts(self) -> Counter[str]:
        return Counter(
            a.refused.code for s in self.selected for a in s.assignees if a.refused is not None
        )


def project_skip_reason(project: ProjectRow) -> SkipReason | None:
    """Why a whole project carries no events (master projects repeat their subprojects' tasks;
    templates and the timesheet administrative project hold no real work)."""
    return _PROJECT_SKIPS.get(project.project_type)


def task_skip_reason(task: TaskRow) -> SkipReason | None:
    # Order matters: the first reason that applies is the one reported.
    if not task.flagged:
        return SkipReason.NOT_FLAGGED
    if task.is_project_summary:
        return SkipReason.PROJECT_SUMMARY_TASK
    if task.is_summary:
        return SkipReason.SUMMARY_TASK
    if task.start is None:
        return SkipReason.NO_START
    if task.finish is None:
        return SkipReason.NO_DUE_DATE if task.all_day else SkipReason.NO_FINISH
    if not (within_project_dates(task.start) and within_project_dates(task.finish)):
        return SkipReason.DATE_OUT_OF_RANGE
    if task.finish < task.start:
        return SkipReason.FINISH_BEFORE_START
    return None


def select_tasks(
    tasks: list[TaskRow],
    assignments: list[AssignmentRow],
    resources: dict[str, ResourceRow],
    mailboxes: MailboxPolicy = ANY_MAILBOX,
) -> Selection:
    """Split a project's tasks into selected (with their assignees) and skipped (with why);
    an assignee whose address ``mailboxes`` refuses carries the refusal."""
    by_task: dict[str, list[AssignmentRow]] = {}
    for assignment in assignments:
        by_task.setdefault(assignment.task_id, []).append(assignment)

    selection = Selection()
    for task in tasks:
        reason = task_skip_reason(task)
        if reason is not None:
            selection.skipped.append(SkippedTask(task, reason))
            continue
        chosen = task_assignees(by_task.get(task.task_id, []), resources, mailboxes)
        selection.selected.append(SelectedTask(task, chosen))
    return selection


def task_assignees(
    assignments: list[AssignmentRow],
    resources: dict[str, ResourceRow],
    mailboxes: MailboxPolicy = ANY_MAILBOX,
) -> tuple[SelectedAssignee, ...]:
    """One task's assignees (one per resource, in resource id order), each with its address
    and, when ``mailboxes`` refuses it, the refusal."""
    assignees: dict[str, SelectedAssignee] = {}
    for assignment in assignments:
        resource = resources.get(assignment.resource_id)
        email = resource.email if resource else None
        assignees.setdefault(
            assignment.resource_id,
            SelectedAssignee(
                resource_id=assignment.resource_id,
                name=resource.name if resource else assignment.resource_name,
                email=email,
                refused=mailboxes.refusal(email) if email else None,
            ),
        )
    return tuple(sorted(assignees.values(), key=lambda a: str(a.resource_id)))
