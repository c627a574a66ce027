"""The sandbox's shared state: one object that every route module reads through the app."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path

from spnego.channel_bindings import GssChannelBindings

from sandbox.calendar import CalendarStore
from sandbox.channel_bindings import server_end_point
from sandbox.config import SandboxConfig
from sandbox.dataverse_seed import load_dataverse
from sandbox.dataverse_store import DataverseStore
from sandbox.editions import SE_SITE_PATH, Edition
from sandbox.ntlm import NtlmAcceptor
from sandbox.planner_seed import load_planner
from sandbox.planner_state import PlannerStore
from sandbox.seed import load_seed
from sandbox.server_event_store import ServerEvents
from sandbox.state import Tenant, deterministic_id
from sandbox.stats import Stats
from sandbox.throttle import MailboxThrottle
from sandbox.tokens import TokenSigner

GRAPH_RESOURCE = "https://graph.microsoft.com"


@dataclass
class RefreshGrant:
    """What a refresh token stands for: a user's sign-in to one client."""

    upn: str
    client_id: str


@dataclass
class DeviceCode:
    """A pending device-code sign-in: waits until the control surface approves (or declines)
    it as the user would in a browser, or until it expires."""

    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    approved_upn: str | None = None
    declined: bool = False


@dataclass
class Sandbox:
    origin: str  # https://127.0.0.1:N, which is also the PWA's resource (audience) URI
    seed_path: Path | None
    startup_config: SandboxConfig
    edition: Edition = Edition.ONLINE
    # The DER server certificate the sandbox serves: Extended Protection binds logons to it.
    certificate_der: bytes | None = None
    tenant: Tenant = field(init=False)
    planner: PlannerStore = field(init=False)  # basic Planner plans (sandbox/planner.py)
    config: SandboxConfig = field(init=False)
    stats: Stats = field(default_factory=Stats)
    calendar: CalendarStore = field(default_factory=CalendarStore)
    throttle: MailboxThrottle = field(default_factory=MailboxThrottle)
    signer: TokenSigner = field(default_factory=TokenSigner)
    refresh_grants: dict[str, RefreshGrant] = field(default_factory=dict)
    revoked_refresh_tokens: set[str] = field(default_factory=set)
    device_codes: dict[str, DeviceCode] = field(default_factory=dict)
    ntlm: NtlmAcceptor = field(default_factory=NtlmAcceptor)
    rng: random.Random = field(default_factory=random.Random)
    server_events: ServerEvents = field(default_factory=ServerEvents)
    dataverse: DataverseStore = field(init=False)  # the Planner premium environment

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Reload the seed and forget events, statistics and run-time configuration.

        The signing key and refresh tokens survive, so a service that stays signed in
        across a reset keeps working as long as its user still exists.
        """
        self.tenant = load_seed(self.seed_path)
        self.dataverse = load_dataverse(self.tenant)
        if self.edition is Edition.SE:
            self.tenant.site_path = SE_SITE_PATH
        self.planner = load_planner(self.tenant, self.seed_path)
        self.config = copy.deepcopy(self.startup_config)
        self.config.pwa_page_sizes = {**self.tenant.page_sizes, **self.config.pwa_page_sizes}
        self.stats.reset()
        self.calendar.clear()
        self.throttle.reset()
        self.server_events.clear()

    @property
    def on_premises(self) -> bool:
        return self.edition is Edition.SE

    @property
    def channel_bindings(self) -> GssChannelBindings | None:
        """What a logon must carry while Extended Protection is on (None: nothing)."""
        if not self.config.pwa_extended_protection or self.certificate_der is None:
            return None
        return server_end_point(self.certificate_der)

    @property
    def pwa_site_url(self) -> str:
        return self.origin + self.tenant.site_path

    @property
    def dataverse_url(self) -> str:
        """The Planner premium environment: the same server under its other name, so the
        environment is its own token audience, as ``https://<org>.crm.dynamics.com`` is."""
        return self.origin.replace("://127.0.0.1", "://localhost", 1)

    @property
    def dataverse_organization(self) -> str:
        return deterministic_id("dataverse-organization", self.tenant.id)

    @property
    def dataverse_business_unit(self) -> str:
        return deterministic_id("dataverse-business-unit", self.tenant.id)

    def resource_uri(self, key: str) -> str:
        """The audience URI behind a seed's resource key ("pwa" or "graph")."""
        return self.origin if key == "pwa" else GRAPH_RESOURCE
