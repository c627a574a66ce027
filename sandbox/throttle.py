"""Outlook's per-mailbox limits: concurrent requests and requests per sliding window.

Graph counts these per app and mailbox; the sandbox has one calendar-writing app per run,
so it keys them by mailbox.  A request holds its slot for its whole handling time, injected
latency included, which is what makes a client that fires more than four requests at one
mailbox see 429s.  The Retry-After the sandbox sends is the time until a slot or budget unit
actually frees up, with millisecond precision (Graph sends fractional seconds too).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Throttled(Exception):
    code: str
    message: str
    retry_after_s: float


@dataclass(eq=False)  # slots are compared by identity when released
class Slot:
    mailbox: str
    expected_end: float


@dataclass
class _MailboxUsage:
    in_flight: list[Slot] = field(default_factory=list)
    admitted: deque[float] = field(default_factory=deque)  # admission times inside the window


class MailboxThrottle:
    def __init__(self) -> None:
        self._usage: dict[str, _MailboxUsage] = {}
        self.in_flight_overall = 0

    def reset(self) -> None:
        self._usage.clear()
        self.in_flight_overall = 0

    def in_flight(self, mailbox: str) -> int:
        usage = self._usage.get(mailbox)
        return len(usage.in_flight) if usage else 0

    def admit(
        self,
        mailbox: str,
        expected_duration_s: float,
        *,
        concurrency_limit: int,
        budget: int,
        window_s: float,
    ) -> Slot:
        """Take a slot for one request, or raise Throttled with the Graph error to return."""
        now = time.monotonic()
        usage = self._usage.setdefault(mailbox, _MailboxUsage())
        if len(usage.in_flight) >= concurrency_limit:
            first_free = min(slot.expected_end for slot in usage.in_flight)
            raise Throttled(
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                max(first_free - now, 0.001),
            )
        while usage.admitted and usage.admitted[0] <= now - window_s:
            usage.admitted.popleft()
        if len(usage.admitted) >= budget:
            raise Throttled(
                "TooManyRequests",
                "Please retry again later.",
                max(usage.admitted[0] + window_s - now, 0.001),
            )
        usage.admitted.append(now)
        slot = Slot(mailbox, now + expected_duration_s)
        usage.in_flight.append(slot)
        self.in_flight_overall += 1
        return slot

    def release(self, slot: Slot) -> None:
        usage = self._usage.get(slot.mailbox)
        if usage and slot in usage.in_flight:
            usage.in_flight.remove(slot)
            self.in_flight_overall -= 1


def format_retry_after(seconds: float) -> str:
    """Graph's Retry-After is in seconds and may be fractional ("2.128")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"
