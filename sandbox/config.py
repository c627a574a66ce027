"""Run-time settings of the sandbox, changed through ``POST /_sandbox/config``.

Every field is a knob a test or benchmark turns; the defaults are the real services' values
where they are known (Outlook's 4 concurrent requests and 10,000 requests per 10 minutes per
mailbox, Graph's 10-event pages, Entra's one-hour access tokens).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TransportFault = Literal["reset", "timeout", "spike"]

# The Windows authentication schemes a PWA zone can offer: the two the acceptor speaks, and
# Basic, which it offers but never accepts (it stands for a zone pwasync cannot sign in to).
AUTH_SCHEMES = ("Negotiate", "NTLM", "Basic")
# Settings that take one of a few words: setting -> the words.
_CHOICES = {
    "pwa_flag_value_form": ("bool", "text", "number", "yesno"),
    "pwa_flag_unset": ("null", "missing"),
    "pwa_next_link_style": ("absolute", "relative"),
}
_BOOLEANS = frozenset({"pwa_extended_protection", "pwa_refuse_task_navigation"})


@dataclass
class FaultPlan:
    """Random failures injected into one surface (Graph or PWA).

    Ratios are probabilities. Status faults (429, 503) are drawn per request, and per item of a
    ``$batch``; transport faults (reset, timeout, spike) per HTTP request, whole batches
    included. ``page_failure_ratio`` applies to the next pages of a paged feed (``$skip``).
    """

    throttle_ratio: float = 0.0  # 429 with Retry-After
    unavailable_ratio: float = 0.0  # 503 with Retry-After
    reset_ratio: float = 0.0  # the connection drops before the request is handled, no answer
    timeout_ratio: float = 0.0  # handled, but answered only after stall_s: the client gave up
    spike_ratio: float = 0.0  # answered spike_ms later than usual
    page_failure_ratio: float = 0.0  # a next page answers 500 (no Retry-After)
    spike_ms: float = 2000.0
    stall_s: float = 35.0  # above the 30 s most clients wait

    def draw(self, rng: random.Random) -> int | None:
        """The status to fail this request with, or None to handle it normally."""
        roll = rng.random()
        if roll < self.throttle_ratio:
            return 429
        if roll < self.throttle_ratio + self.unavailable_ratio:
            return 503
        return None

    def draw_transport(self, rng: random.Random) -> TransportFault | None:
        """What happens to this HTTP request's connection, or None for nothing special."""
        roll = rng.random()
        for fault, ratio in (
            ("reset", self.reset_ratio),
            ("timeout", self.timeout_ratio),
            ("spike", self.spike_ratio),
        ):
            if roll < ratio:
                return fault  # type: ignore[return-value]
            roll -= ratio
        return None

    def draw_page_failure(self, rng: random.Random) -> bool:
        return self.page_failure_ratio > 0 and rng.random() < self.page_failure_ratio

    def set(self, name: str, value: Any, surface: str) -> None:
        """Change one knob; raises ValueError naming it when the value does not fit."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise ValueError(f"faults.{surface}.{name} is not a known fault setting")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (name.endswith("_ratio") and value > 1)
        ):
            limit = "a ratio in [0, 1]" if name.endswith("_ratio") else "a non-negative number"
            raise ValueError(f"faults.{surface}.{name} must be {limit}")
        setattr(self, name, float(value))


@dataclass
class SandboxConfig:
    graph_latency_ms: int = 0
    graph_latency_jitter_ms: int = 0
    pwa_latency_ms: int = 0
    mailbox_concurrency_limit: int = 4
    batch_concurrency_limit: int = 4  # items of one $batch running at once, any mailboxes
    mailbox_budget: int = 10_000
    mailbox_budget_window_s: float = 600.0
    graph_page_size: int = 10
    token_lifetime_s: int = 3599
    # How long a transactionId deduplicates POSTs; None = as long as the event exists.
    transaction_id_window_s: float | None = None
    pwa_page_sizes: dict[str, int] = field(default_factory=dict)
    # Bad data in the reporting feed: task id -> ProjectData property -> the raw JSON value its
    # Tasks rows carry instead (an unparsable date, a finish before the start, year 1...).
    # ProjectData rows take them by ProjectData names (TaskStartDate), ProjectServer REST rows by
    # REST names (Start, Custom_x005f_…); a name a surface does not have is ignored there.
    task_row_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Windows authentication: the schemes the 401 offers and the acceptor takes, in that order.
    pwa_auth_schemes: list[str] = field(default_factory=lambda: ["Negotiate", "NTLM"])
    # IIS Extended Protection: a logon must carry the TLS channel bindings (the se default).
    pwa_extended_protection: bool = False
    # How ProjectServer REST writes a FLAG custom value (unconfirmed: see sandbox/README.md)
    # and whether an unset one is null or left out of the row.
    pwa_flag_value_form: str = "bool"
    pwa_flag_unset: str = "null"
    # ProjectServer REST next links: absolute URLs, or relative to the request URL (se).
    pwa_next_link_style: str = "absolute"
    # Projects('…')/Tasks and /Assignments answer 404, as two Project Online clients reported.
    pwa_refuse_task_navigation: bool = False
    # The zone _api/web/RegionalSettings/TimeZone reports (IANA); None = the tenant's.
    pwa_regional_time_zone: str | None = None
    faults: dict[str, FaultPlan] = field(
        default_factory=lambda: {"graph": FaultPlan(), "pwa": FaultPlan()}
    )

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial JSON document; raises ValueError naming the first bad setting."""
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
            if name == "faults":
                self._update_faults(value)
            elif name == "pwa_page_sizes":
                self._update_page_sizes(value)
            elif name == "task_row_overrides":
                self._update_row_overrides(value)
            elif name == "pwa_auth_schemes":
                self.pwa_auth_schemes = _schemes(value)
            elif name == "pwa_regional_time_zone":
                self.pwa_regional_time_zone = _zone_name(value)
            elif name in _CHOICES:
                if value not in _CHOICES[name]:
                    raise ValueError(f"{name} must be one of {', '.join(_CHOICES[name])}")
                setattr(self, name, value)
            elif name in _BOOLEANS:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                setattr(self, name, value)
            else:
                setattr(self, name, _coerce(name, value, getattr(self, name), known[name].type))

    def _update_faults(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError('faults must be an object like {"graph": {"throttle_ratio": 0.1}}')
        for surface, ratios in value.items():
            if surface not in self.faults:
                raise ValueError(f"faults.{surface}: unknown fault surface; known: graph, pwa")
            if not isinstance(ratios, dict):
                raise ValueError(f"faults.{surface} must be an object of fault settings")
            for name, setting in ratios.items():
                self.faults[surface].set(name, setting, surface)

    def _update_page_sizes(self, value: Any) -> None:
        if not isinstance(value, dict) or not all(
            isinstance(size, int) and size > 0 for size in value.values()
        ):
            raise ValueError("pwa_page_sizes must map entity set names to positive integers")
        self.pwa_page_sizes.update(value)

    def _update_row_overrides(self, value: Any) -> None:
        if not isinstance(value, dict) or not all(
            isinstance(row, dict) and all(isinstance(p, str) for p in row) for row in value.values()
        ):
            raise ValueError("task_row_overrides must map task ids to {property: raw value}")
        self.task_row_overrides = {str(task).lower(): dict(row) for task, row in value.items()}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _schemes(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"pwa_auth_schemes must be a list of {', '.join(AUTH_SCHEMES)}")
    by_name = {scheme.lower(): scheme for scheme in AUTH_SCHEMES}
    unknown = [v for v in value if v.lower() not in by_name]
    if unknown:
        raise ValueError(f"pwa_auth_schemes: unknown scheme {unknown[0]!r}")
    return list(dict.fromkeys(by_name[v.lower()] for v in value))


def _zone_name(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return ZoneInfo(str(value)).key
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"pwa_regional_time_zone: unknown time zone {value!r}") from error


def _coerce(name: str, value: Any, current: Any, annotation: str) -> Any:
    if value is None and "None" in annotation:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return int(value) if isinstance(current, int) and "float" not in annotation else float(value)
