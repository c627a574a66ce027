"""PWA wall-clock times and UTC instants (pure functions).

ProjectData reports every date as a naive wall-clock time of the PWA's time zone
(``PWASYNC_PWA_TIMEZONE``). Two wall-clock times per year are not one instant:

- in the **fall-back fold** (e.g. 02:30 on the last Sunday of October in Berlin, which happens
  twice) the time is read as its **first** occurrence (daylight time, ``fold=0``);
- in the **spring-forward gap** (e.g. 02:30 on the last Sunday of March, which never happens)
  the time **moves forward by the gap** (02:30 becomes 03:30 daylight time), which is what
  ``zoneinfo`` does with ``fold=0`` and what calendar clients do with a nonexistent time.

The poller resolves each date once, with these rules, and sends the UTC instant along with the
wall clock, so no reader has to guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def to_utc(wall_clock: datetime, zone: ZoneInfo) -> datetime:
    """The instant a PWA wall-clock time stands for (see the module docstring for DST)."""
    if wall_clock.tzinfo is not None:
        raise ValueError("PWA times are naive wall-clock times")
    return wall_clock.replace(tzinfo=zone, fold=0).astimezone(UTC)


def to_pwa_wall_clock(moment: datetime, zone: ZoneInfo) -> datetime:
    """An aware instant as the naive wall-clock time PWA would report for it."""
    if moment.tzinfo is None:
        raise ValueError("pass an aware datetime")
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)
