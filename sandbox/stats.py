"""Counters the control surface reports at ``GET /_sandbox/stats``."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.graph_requests: Counter[tuple[str, int]] = Counter()
        self.graph_throttled = 0
        self.graph_peak_by_mailbox: dict[str, int] = {}
        self.graph_peak_overall = 0
        self.graph_batches = 0
        self.pwa_requests: Counter[str] = Counter()
        self.pwa_statuses: Counter[int] = Counter()
        self.token_requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[tuple[str, str]] = Counter()

    def graph_response(self, method: str, status: int) -> None:
        self.graph_requests[(method, status)] += 1
        if status == 429:
            self.graph_throttled += 1

    def graph_concurrency(self, mailbox: str, in_mailbox: int, overall: int) -> None:
        self.graph_peak_by_mailbox[mailbox] = max(
            self.graph_peak_by_mailbox.get(mailbox, 0), in_mailbox
        )
        self.graph_peak_overall = max(self.graph_peak_overall, overall)

    def pwa_response(self, path_key: str, status: int) -> None:
        self.pwa_requests[path_key] += 1
        self.pwa_statuses[status] += 1

    def fault(self, surface: str, kind: str) -> None:
        """An injected fault: ``throttle``, ``unavailable``, ``reset``, ``timeout``, ``spike``,
        ``page_failure``."""
        self.faults[(surface, kind)] += 1

    def token_response(self, grant_type: str, error: str | None) -> None:
        self.token_requests[(grant_type, error or "ok")] += 1

    def to_json(self) -> dict[str, Any]:
        by_method: dict[str, dict[str, int]] = {}
        for (method, status), count in sorted(self.graph_requests.items()):
            by_method.setdefault(method, {})[str(status)] = count
        tokens: dict[str, dict[str, int]] = {}
        for (grant, outcome), count in sorted(self.token_requests.items()):
            tokens.setdefault(grant, {})[outcome] = count
        faults: dict[str, dict[str, int]] = {"graph": {}, "pwa": {}}
        for (surface, kind), count in sorted(self.faults.items()):
            faults.setdefault(surface, {})[kind] = count
        return {
            "graph": {
                "requests": sum(self.graph_requests.values()),
                "by_method": by_method,
                "throttled": self.graph_throttled,
                "batches": self.graph_batches,
                "peak_concurrency": {
                    "overall": self.graph_peak_overall,
                    "by_mailbox": dict(sorted(self.graph_peak_by_mailbox.items())),
                },
            },
            "pwa": {
                "requests": sum(self.pwa_requests.values()),
                "by_path": dict(sorted(self.pwa_requests.items())),
                "by_status": {str(s): c for s, c in sorted(self.pwa_statuses.items())},
            },
            "tokens": {"requests": sum(self.token_requests.values()), "by_grant": tokens},
            "faults": faults,
        }
