"""Run-time settings of the sandbox, changed through ``POST /_sandbox/config``.

Every field is a knob a test or benchmark turns; the defaults are the real services' values
where they are known (Outlook's 4 concurrent requests and 10,000 requests per 10 minutes per
mailbox, Graph's 10-event pages, Entra's one-hour access tokens).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultPlan:
    """Random failures injected into one surface before a request is handled.

    Ratios are probabilities per request.  New kinds of fault (connection resets, slow
    bodies…) belong here as further ratios, drawn in ``draw``.
    """

    throttle_ratio: float = 0.0  # 429 with Retry-After
    unavailable_ratio: float = 0.0  # 503 with Retry-After

    def draw(self, rng: random.Random) -> int | None:
        """The status to fail this request with, or None to handle it normally."""
        roll = rng.random()
        if roll < self.throttle_ratio:
            return 429
        if roll < self.throttle_ratio + self.unavailable_ratio:
            return 503
        return None


@dataclass
class SandboxConfig:
    graph_latency_ms: int = 0
    graph_latency_jitter_ms: int = 0
    pwa_latency_ms: int = 0
    mailbox_concurrency_limit: int = 4
    mailbox_budget: int = 10_000
    mailbox_budget_window_s: float = 600.0
    graph_page_size: int = 10
    token_lifetime_s: int = 3599
    # How long a transactionId deduplicates POSTs; None = as long as the event exists.
    transaction_id_window_s: float | None = None
    pwa_page_sizes: dict[str, int] = field(default_factory=dict)
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
            else:
                setattr(self, name, _coerce(name, value, getattr(self, name), known[name].type))

    def _update_faults(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError("faults must be an object like {\"graph\": {\"throttle_ratio\": 0.1}}")
        for surface, ratios in value.items():
            if surface not in self.faults:
                raise ValueError(f"unknown fault surface {surface!r}; known: graph, pwa")
            plan = self.faults[surface]
            for name, ratio in ratios.items():
                if not hasattr(plan, name) or not isinstance(ratio, int | float) \
                        or not 0 <= ratio <= 1:
                    raise ValueError(f"faults.{surface}.{name} must be a known ratio in [0, 1]")
                setattr(plan, name, float(ratio))

    def _update_page_sizes(self, value: Any) -> None:
        if not isinstance(value, dict) or not all(
            isinstance(size, int) and size > 0 for size in value.values()
        ):
            raise ValueError("pwa_page_sizes must map entity set names to positive integers")
        self.pwa_page_sizes.update(value)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, current: Any, annotation: str) -> Any:
    if value is None and "None" in annotation:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return int(value) if isinstance(current, int) and "float" not in annotation else float(value)
