"""Which reader of plans a process uses (PWASYNC_SOURCE), opened once with its HTTP edge.

Everything above this (the sync runner, dry runs, the commands) takes an ``OpenedSource`` and
never asks which product answers: that is the seam the Planner sources plug into.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import httpx
import redis

from common.errors import ConfigError
from common.settings import Settings
from services.poller.connection import open_pwa
from services.poller.pwa_api import PwaSource
from services.poller.source import PlanSource

#: (project id, task id) -> the link put into the task's events, None for none.
TaskLink = Callable[[str, str], str | None]


@dataclass(frozen=True)
class OpenedSource:
    feed: PlanSource
    requests_made: Callable[[], int]
    task_link: TaskLink
    #: Where the plans live (a URL), for logs and the check's lines.
    location: str
    #: Closes what the reader opened of its own (the HTTP client it was given is the caller's).
    close: Callable[[], None] = lambda: None


def pwa_project_link(site_url: str, project_id: str, _task_id: str) -> str:
    """The project's page in PWA (Project Detail Pages; the path is the PWA default)."""
    return f"{site_url.rstrip('/')}/project.aspx?projuid={project_id}"


def require_source(settings: Settings) -> None:
    """ConfigError unless the settings the configured source needs are present."""
    if settings.source == "project":
        if settings.selection == "label":
            raise ConfigError(
                "PWASYNC_SELECT_BY=label: Project plans have no labels; "
                "use field (PWASYNC_CREATE_EVENT_FIELD) or a Planner PWASYNC_SOURCE"
            )
        settings.require_pwa()
        return
    if settings.source == "dataverse":
        settings.require_dataverse()
        return
    if settings.source == "planner":
        if settings.selection != "label":
            raise ConfigError(
                "PWASYNC_SELECT_BY=field: basic Planner tasks have no custom fields; use label "
                "(PWASYNC_CREATE_EVENT_LABEL), the default for PWASYNC_SOURCE=planner"
            )
        settings.require_planner()


def open_plan_source(
    settings: Settings,
    http: httpx.Client,
    redis_client: redis.Redis | None,
    *,
    stop: threading.Event | None = None,
    read_only: bool = False,
) -> OpenedSource:
    """``read_only`` (dry runs): a reader that keeps state of its own (Dataverse's change
    detection) uses what it reads without keeping it."""
    require_source(settings)
    if settings.source == "dataverse":
        from services.poller.dataverse_source import open_dataverse_source

        return open_dataverse_source(settings, http, redis_client, stop=stop, read_only=read_only)
    if settings.source == "planner":  # keeps no state of its own: read_only changes nothing
        return _open_planner(settings, http, stop)
    assert settings.pwa_url is not None
    pwa = open_pwa(settings, http, redis_client, stop=stop)
    return OpenedSource(
        feed=PwaSource(pwa, settings),
        requests_made=lambda: pwa.requests_made,
        task_link=partial(pwa_project_link, settings.pwa_url),
        location=settings.pwa_url,
        close=pwa.close,
    )


def _open_planner(
    settings: Settings, http: httpx.Client, stop: threading.Event | None
) -> OpenedSource:
    from services.poller.planner_reader import open_planner
    from services.poller.planner_rows import planner_task_link

    reader = open_planner(settings, http, stop=stop)
    return OpenedSource(
        feed=reader,
        requests_made=lambda: reader.requests_made,
        task_link=planner_task_link,
        location=f"{settings.graph_url}/planner",
    )
