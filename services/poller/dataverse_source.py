"""Opening the Planner premium source: the environment's HTTP edge, change detection's Redis
state and the reader, from the settings (docs/sources/planner-premium.md)."""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import partial

import httpx
import redis

from common.redis_store import Keys, connect_redis_for
from common.settings import Settings
from services.poller.dataverse_auth import DataverseHttp, open_dataverse
from services.poller.dataverse_changes import watched_tables
from services.poller.dataverse_reader import DataverseReader
from services.poller.dataverse_state import DataverseState
from services.poller.dataverse_tracking import ChangeDetector
from services.poller.sources import OpenedSource


def open_dataverse_source(
    settings: Settings,
    http: httpx.Client,
    redis_client: redis.Redis | None,
    *,
    stop: threading.Event | None = None,
    read_only: bool = False,
) -> OpenedSource:
    """The ``OpenedSource`` of PWASYNC_SOURCE=dataverse (``sources.open_plan_source``)."""
    if redis_client is None:  # change detection keeps its delta links and stamps there
        redis_client = connect_redis_for(settings)
    reader, edge = open_dataverse_reader(
        settings,
        http,
        redis_client,
        select_by=settings.selection,
        label=settings.create_event_label,
        stop=stop,
        read_only=read_only,
    )
    assert settings.dataverse_url is not None
    return OpenedSource(
        feed=reader,
        requests_made=lambda: edge.requests_made,
        task_link=partial(dataverse_project_link, settings.dataverse_url),
        location=settings.dataverse_url,
    )


def dataverse_project_link(environment_url: str, project_id: str, _task_id: str) -> str:
    """The project's record in the environment (the model-driven form every Dataverse row
    has; the Project Power App opens it)."""
    return (
        f"{environment_url.rstrip('/')}/main.aspx?pagetype=entityrecord&etn=msdyn_project"
        f"&id={project_id}"
    )


def open_dataverse_reader(
    settings: Settings,
    http: httpx.Client,
    redis_client: redis.Redis,
    *,
    select_by: str,
    label: str,
    stop: threading.Event | None = None,
    read_only: bool = False,
) -> tuple[DataverseReader, DataverseHttp]:
    edge = open_dataverse(settings, http, stop=stop)
    state = DataverseState(
        redis_client,
        Keys(settings.scenario),
        settings.redis_url.get_secret_value(),
        read_only=read_only,
    )
    changes = ChangeDetector(
        edge,
        state,
        watched_tables(select_by),
        overlap=timedelta(seconds=settings.sync_overlap_seconds),
        reconcile_every=timedelta(minutes=settings.dataverse_reconcile_minutes),
    )
    reader = DataverseReader(
        edge,
        changes,
        settings.pwa_zone,
        select_by=select_by,
        label=label,
        column=settings.create_event_field,
    )
    return reader, edge
