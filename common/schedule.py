"""The poller's schedule: parsing ``PWASYNC_SCHEDULE`` and computing the next run.

Pure functions over aware datetimes; the poller's clock and sleeping live elsewhere.
Accepted forms: ``on_demand``, ``daily HH:MM``, ``weekly DAY HH:MM`` (DAY = mon..sun) and
``every N minutes``. Times are wall-clock times in ``PWASYNC_SCHEDULE_TIMEZONE``.

``every N minutes`` runs at fixed slots, not N minutes after whenever a replica looked: local
midnight + k*N minutes for N <= 1440 (the last slot of a day is followed by the next midnight,
so an N that does not divide 1440 has one shorter interval a day), and Monday's local midnight
+ k*N for N > 1440 (likewise per week). Every replica therefore computes the same instant, and
the tick claim keeps it to one run. A slot in a DST spring-forward gap does not exist and is
skipped; one in the fall-back fold runs at both occurrences, so an N that divides 60 keeps its
real-time spacing across the change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})$")
_WEEKLY = re.compile(r"^weekly\s+([a-z]{3})\s+(\d{1,2}):(\d{2})$")
_EVERY = re.compile(r"^every\s+(\d+)\s+minutes?$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``kind`` is one of on_demand, daily, weekly, every."""

    kind: str
    at: time | None = None
    weekday: int | None = None  # Monday = 0, as datetime.weekday()
    every_minutes: int | None = None

    @property
    def is_on_demand(self) -> bool:
        return self.kind == "on_demand"

    def next_run(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """The first run strictly after ``now`` (aware), as an aware UTC-comparable datetime."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self.kind == "on_demand":
            return None
        if self.kind == "every":
            assert self.every_minutes is not None
            return _next_slot(now, tz, self.every_minutes)
        assert self.at is not None
        local_now = now.astimezone(tz)
        candidate_day = local_now.date()
        # At most 8 days ahead covers every weekly case. A wall-clock time in a DST gap moves
        # forward by the gap and one in the fall-back fold is its first occurrence (zoneinfo's
        # fold=0), as cron does. Candidates are compared as instants: two aware datetimes with
        # the same tzinfo compare by wall clock, which in the fold would offer the first 02:30
        # again after it ran (the clock shows 02:15 a second time).
        for offset in range(8):
            day = candidate_day + timedelta(days=offset)
            if self.kind == "weekly" and day.weekday() != self.weekday:
                continue
            candidate = datetime.combine(day, self.at, tzinfo=tz)
            if candidate.astimezone(UTC) > now.astimezone(UTC):
                return candidate
        raise AssertionError("unreachable: a weekly slot always exists within 8 days")

    def describe(self) -> str:
        if self.kind == "on_demand":
            return "on_demand"
        if self.kind == "every":
            return f"every {self.every_minutes} minutes"
        assert self.at is not None
        hhmm = self.at.strftime("%H:%M")
        if self.kind == "daily":
            return f"daily {hhmm}"
        assert self.weekday is not None
        return f"weekly {WEEKDAYS[self.weekday]} {hhmm}"


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule string; raises ValueError with a message fit for an operator."""
    value = " ".join(text.strip().lower().split())
    if value == "on_demand":
        return Schedule("on_demand")
    if match := _DAILY.match(value):
        return Schedule("daily", at=_clock(match.group(1), match.group(2)))
    if match := _WEEKLY.match(value):
        day = match.group(1)
        if day not in WEEKDAYS:
            raise ValueError(f"unknown day {day!r}: use one of {', '.join(WEEKDAYS)}")
        return Schedule(
            "weekly", at=_clock(match.group(2), match.group(3)), weekday=WEEKDAYS.index(day)
        )
    if match := _EVERY.match(value):
        minutes = int(match.group(1))
        if not 1 <= minutes <= 10080:
            raise ValueError("every N minutes needs 1 <= N <= 10080")
        return Schedule("every", every_minutes=minutes)
    raise ValueError(
        "use on_demand, 'daily HH:MM', 'weekly DAY HH:MM' (DAY = mon..sun) or 'every N minutes'"
    )


#: More than any UTC offset change: a wall-clock time further than this from another maps to an
#: instant on the same side of it.
_MAX_SHIFT = timedelta(hours=26)


def _next_slot(now: datetime, tz: ZoneInfo, minutes: int) -> datetime:
    """The first ``every N minutes`` slot strictly after ``now`` (see the module docstring)."""
    step = timedelta(minutes=minutes)
    period = timedelta(days=1 if minutes <= 1440 else 7)
    wall_now = now.astimezone(tz).replace(tzinfo=None)
    # A wall-clock time more than _MAX_SHIFT before now's is an earlier instant.
    low = wall_now - _MAX_SHIFT
    start = datetime.combine(low.date(), time())
    if minutes > 1440:
        start -= timedelta(days=start.weekday())
    best: datetime | None = None
    best_wall = wall_now
    while True:
        k = max(0, (low - start) // step)
        while (wall := start + k * step) < start + period:
            if best is not None and wall > best_wall + _MAX_SHIFT:
                return best.astimezone(tz)
            for instant in _instants(wall, tz):
                if instant > now and (best is None or instant < best):
                    best, best_wall = instant, wall
            k += 1
        start += period


def _instants(wall: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    """The UTC instants that show ``wall`` in ``tz``: none in a gap, two in a fold."""
    seen: set[datetime] = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant not in seen and instant.astimezone(tz).replace(tzinfo=None) == wall:
            seen.add(instant)
            yield instant


def _clock(hours: str, minutes: str) -> time:
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return time(h, m)
