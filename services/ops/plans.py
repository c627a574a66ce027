"""The plans, for the operator's commands that read them (explain, usage names, check).

One place opens the configured plan source for a one-shot command, the way the poller opens
it, so every command reads the same plans through the same seam.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import redis

from common.settings import Settings
from services.ledger.usage import Names
from services.poller.connection import open_pwa
from services.poller.pwa_api import PwaSource
from services.poller.source import PlanSource, ProjectRow, TaskRow, UnpublishedProject


def open_plans(settings: Settings, http: httpx.Client, client: redis.Redis) -> PlanSource:
    """The plan source; raises ConfigError when this host is not set up to read the plans."""
    settings.require_pwa()
    return PwaSource(open_pwa(settings, http, client), settings)


def plans_site(settings: Settings) -> str:
    """The URL that names where the plans live (links in the story)."""
    return settings.pwa_url or ""


def plan_names(feed: PlanSource, tasks: Iterable[tuple[Any, Any]]) -> dict[str, Names]:
    """The names the plans give now to these (task id, project id) pairs, by task id (text):
    one read of the projects, and each project's tasks once. A task no longer in its plan has
    no task name; a project no longer there, no project name either."""
    by_project: dict[Any, set[str]] = {}
    for task_id, project_id in tasks:
        by_project.setdefault(project_id, set()).add(str(task_id))
    projects: dict[str, str] = {}
    published: set[str] = set()  # a draft lists no tasks
    for row in feed.projects(project_ids=sorted(by_project, key=str)):
        if isinstance(row, ProjectRow):
            projects[str(row.project_id)] = row.name
            published.add(str(row.project_id))
        elif isinstance(row, UnpublishedProject):
            projects[str(row.key)] = row.name
    names = {}
    for project_id, wanted in by_project.items():
        found = {}
        if str(project_id) in published:
            found = {
                str(row.task_id): row.name
                for row in feed.tasks(project_id)
                if isinstance(row, TaskRow) and str(row.task_id) in wanted
            }
        for task_id in wanted:
            names[task_id] = Names(found.get(task_id), projects.get(str(project_id)))
    return names
