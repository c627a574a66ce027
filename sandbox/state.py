"""The emulated tenant: directory (users, app registrations), PWA data and custom fields.

Project data follows Project Online's two stores: every project has a *draft* plan that edits
change, and a *published* snapshot that the ProjectData reporting feed reads.  Publishing copies
the draft, moves ProjectModifiedDate to now and, as the real publish does, touches the
TaskModifiedDate of every task.  All PWA times are naive wall-clock times in the PWA's time
zone, which is how the reporting feed stores and returns them.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.client_assertion import RegisteredCertificate

FLAG_FIELD_TYPE = 17  # CustomFieldType.FLAG


class MailboxKind(StrEnum):
    """Whether a user has an Exchange Online mailbox that Graph can reach."""

    YES = "yes"
    NO = "no"  # a directory account that never had a mailbox
    UNLICENSED = "unlicensed"  # the mailbox exists but has no Exchange Online licence


# PWA permissions of a user (sandbox/README.md maps them to the real PWA permissions).
REPORTING = "reporting"  # "Access Project Server Reporting Service"
MANAGE_CUSTOM_FIELDS = "manage_custom_fields"  # "Manage Enterprise Custom Fields"
USE_REMOTE_INTERFACES = "use_remote_interfaces"  # SharePoint's "Use Remote Interfaces"
VIEW_PROJECT_SCHEDULE = "view_project_schedule"  # Log On, Open Project, View Project Schedule
VIEW_ENTERPRISE_RESOURCES = "view_enterprise_resources"  # "View Enterprise Resource Data"


class StateError(Exception):
    """A control-surface or seed request the tenant cannot apply; ``status`` is the HTTP one."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class User:
    id: str
    upn: str
    display_name: str
    password: str
    mailbox: MailboxKind = MailboxKind.YES
    pwa_permissions: frozenset[str] = frozenset()
    mfa_required: bool = False
    locked: bool = False
    password_expired: bool = False  # Windows refuses the logon until the password is changed

    @property
    def can_log_on(self) -> bool:
        return not (self.locked or self.password_expired)


@dataclass
class AppRegistration:
    """``delegated``/``application`` map a resource key ("pwa" or "graph") to permission names."""

    client_id: str
    display_name: str
    is_public: bool
    secret: str | None = None
    delegated: dict[str, list[str]] = field(default_factory=dict)
    application: dict[str, list[str]] = field(default_factory=dict)
    #: Certificates it may sign client assertions with (sandbox/client_assertion.py).
    certificates: list[RegisteredCertificate] = field(default_factory=list)


@dataclass
class Resource:
    id: str
    name: str
    email: str | None
    is_active: bool
    created: datetime
    modified: datetime

    @property
    def nt_account(self) -> str | None:
        # Project Online's claims-encoded account name for a Microsoft 365 user.
        return f"i:0#.f|membership|{self.email.lower()}" if self.email else None


@dataclass
class CustomField:
    id: str
    name: str
    field_type: int
    entity_type_id: str
    internal_name: str
    description: str = ""
    is_required: bool = False
    lookup_table_id: str | None = None

    @property
    def odata_name(self) -> str:
        """ProjectData's property name: the display name without spaces or special characters."""
        return odata_property_name(self.name)


def odata_property_name(display_name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "", display_name)


@dataclass
class Assignment:
    id: str
    resource_id: str
    created: datetime
    modified: datetime


@dataclass
class Task:
    """A task of a plan; ``parent_id`` None means a top-level task under the project summary."""

    id: str
    name: str
    parent_id: str | None
    start: datetime | None
    finish: datetime | None
    created: datetime
    modified: datetime
    milestone: bool = False
    percent_complete: int = 0
    custom: dict[str, Any] = field(default_factory=dict)  # custom field id -> value
    # Seed values of fields that do not exist yet (display name -> value); they are set when
    # the field is created, e.g. the default seed's draft flag after `pwasync fields create`.
    pending_custom: dict[str, Any] = field(default_factory=dict)
    assignments: list[Assignment] = field(default_factory=list)


@dataclass
class Plan:
    """One store's version of a project: its name and tasks in outline (TaskIndex) order."""

    name: str
    tasks: list[Task] = field(default_factory=list)

    def task(self, task_id: str) -> Task | None:
        return next((task for task in self.tasks if task.id == task_id), None)

    def subtree_end(self, task_id: str) -> int:
        """Index just past the task's last descendant: where a new child goes."""
        index = next(i for i, task in enumerate(self.tasks) if task.id == task_id)
        level = self.outline_level(self.tasks[index])
        end = index + 1
        while end < len(self.tasks) and self.outline_level(self.tasks[end]) > level:
            end += 1
        return end

    def outline_level(self, task: Task) -> int:
        level = 1
        while task.parent_id is not None:
            parent = self.task(task.parent_id)
            if parent is None:
                break
            task, level = parent, level + 1
        return level

    def remove(self, task_id: str) -> list[str]:
        """Remove a task and its subtree (as Project does); returns the removed ids."""
        doomed = {task_id}
        for task in self.tasks:  # outline order: parents come before their children
            if task.parent_id in doomed:
                doomed.add(task.id)
        self.tasks = [task for task in self.tasks if task.id not in doomed]
        return sorted(doomed)


@dataclass
class Project:
    id: str
    project_type: int
    owner_id: str | None
    created: datetime
    summary_task_id: str
    draft: Plan
    published: Plan | None = None
    modified: datetime | None = None  # ProjectModifiedDate: set by publishing

    def publish(self, now: datetime) -> None:
        # Two publishes of one project are never in the same millisecond in PWA (a publish is a
        # queued job); the emulator can be that fast, so keep the date strictly increasing.
        if self.modified is not None and now <= self.modified:
            now = self.modified + timedelta(milliseconds=1)
        for task in self.draft.tasks:
            task.modified = now
            for assignment in task.assignments:
                assignment.modified = now
        self.published = copy.deepcopy(self.draft)
        self.modified = now


def deterministic_id(*parts: str) -> str:
    """A stable GUID derived from other ids, for summary tasks, assignments and generated data."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "pwasync-sandbox:" + ":".join(parts)))


@dataclass
class Tenant:
    id: str
    domain: str
    display_name: str
    time_zone: ZoneInfo
    site_path: str
    page_sizes: dict[str, int]
    entity_types: dict[str, str]  # "TaskEntity" -> GUID
    service: dict[str, str]
    demo: dict[str, Any]
    users: dict[str, User] = field(default_factory=dict)  # casefolded UPN -> user
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    custom_fields: dict[str, CustomField] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    generated_runs: int = 0  # calls of the control surface's bulk generator, for unique names

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The PWA's current wall-clock time, at the millisecond precision SQL Server keeps."""
        now = datetime.now(self.time_zone).replace(tzinfo=None)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    # -- directory -------------------------------------------------------------------------

    def add_user(self, user: User) -> None:
        self.users[user.upn.casefold()] = user

    def user(self, upn_or_id: str) -> User | None:
        found = self.users.get(upn_or_id.casefold())
        if found:
            return found
        return next((u for u in self.users.values() if u.id == upn_or_id.lower()), None)

    def accepts_tenant(self, name: str) -> bool:
        """Whether an authority path segment names this tenant (or a multi-tenant alias)."""
        return name.lower() in (self.id, self.domain.lower(), "organizations", "common")

    # -- custom fields ---------------------------------------------------------------------

    def field_by_name(self, name: str) -> CustomField | None:
        return next(
            (f for f in self.custom_fields.values() if f.name.casefold() == name.casefold()), None
        )

    def add_custom_field(self, custom_field: CustomField) -> None:
        """Store a new field and give it the values seeded tasks held for it by name."""
        self.custom_fields[custom_field.id] = custom_field
        for project in self.projects.values():
            for plan in (project.draft, project.published):
                for task in plan.tasks if plan else []:
                    value = task.pending_custom.pop(custom_field.name.casefold(), None)
                    if value is not None:
                        task.custom[custom_field.id] = value

    # -- projects --------------------------------------------------------------------------

    def project(self, project_id: str) -> Project:
        found = self.projects.get(project_id.lower())
        if not found:
            raise StateError(f"no project with id {project_id}", 404)
        return found

    def draft_task(self, task_id: str) -> tuple[Project, Task]:
        for project in self.projects.values():
            task = project.draft.task(task_id.lower())
            if task:
                return project, task
        raise StateError(f"no task with id {task_id} in any project's draft", 404)

    def publish(self, project_id: str) -> Project:
        project = self.project(project_id)
        project.publish(self.now())
        return project

    def published_projects(self) -> list[tuple[Project, Plan]]:
        return [(p, p.published) for p in self.projects.values() if p.published is not None]
