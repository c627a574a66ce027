"""Opening the Planner premium source: the environment's HTTP edge, change detection's Redis
state and the reader, from the settings (README "Planner premium")."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import redis

from common.redis_store import Keys
from common.settings import Settings
from services.poller.dataverse_auth import DataverseHttp, open_dataverse
from services.poller.dataverse_changes import watched_tables
from services.poller.dataverse_reader import DataverseReader
from services.poller.dataverse_state import DataverseState
from services.poller.dataverse_tracking import ChangeDetector


def open_dataverse_reader(
    settings: Settings,
    http: httpx.Client,
    redis_client: redis.Redis,
    *,
    select_by: str,
    label: str,
    stop: threading.Event | None = None,
) -> tuple[DataverseReader, DataverseHttp]:
    edge = open_dataverse(settings, http, stop=stop)
    state = DataverseState(
        redis_client, Keys(settings.scenario), settings.redis_url.get_secret_value()
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
