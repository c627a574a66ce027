"""The plans, for the operator's commands that read them (explain, usage names, check).

One place opens the configured plan source for a one-shot command, the way the poller opens
it, so every command reads the same plans through the same seam.
"""

from __future__ import annotations

import httpx
import redis

from common.settings import Settings
from services.poller.connection import open_pwa
from services.poller.pwa_api import PwaSource
from services.poller.source import PlanSource


def open_plans(settings: Settings, http: httpx.Client, client: redis.Redis) -> PlanSource:
    """The plan source; raises ConfigError when this host is not set up to read the plans."""
    settings.require_pwa()
    return PwaSource(open_pwa(settings, http, client), settings)


def plans_site(settings: Settings) -> str:
    """The URL that names where the plans live (links in the story)."""
    return settings.pwa_url or ""
