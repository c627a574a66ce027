"""Time zone names as Graph accepts them in ``dateTimeTimeZone.timeZone``.

Graph takes "UTC", Windows time zone names ("W. Europe Standard Time") and, as "additional
time zones", IANA names ("Europe/Berlin").  Windows names map to IANA zones through the CLDR
``windowsZones`` table; the common ones are listed here.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WINDOWS_TO_IANA = {
    "Dateline Standard Time": "Etc/GMT+12",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Central America Standard Time": "America/Guatemala",
    "Canada Central Standard Time": "America/Regina",
    "Eastern Standard Time": "America/New_York",
    "SA Pacific Standard Time": "America/Bogota",
    "Atlantic Standard Time": "America/Halifax",
    "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "UTC": "Etc/UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "GTB Standard Time": "Europe/Bucharest",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Egypt Standard Time": "Africa/Cairo",
    "Turkey Standard Time": "Europe/Istanbul",
    "Russian Standard Time": "Europe/Moscow",
    "Arab Standard Time": "Asia/Riyadh",
    "Arabian Standard Time": "Asia/Dubai",
    "Iran Standard Time": "Asia/Tehran",
    "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Calcutta",
    "Nepal Standard Time": "Asia/Katmandu",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "SE Asia Standard Time": "Asia/Bangkok",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "Tasmania Standard Time": "Australia/Hobart",
    "New Zealand Standard Time": "Pacific/Auckland",
}

try:  # every Windows name Graph knows, from CLDR's windowsZones table as tzlocal ships it
    from tzlocal.windows_tz import win_tz

    WINDOWS_TO_IANA = {**win_tz, **WINDOWS_TO_IANA}
except ImportError:  # pragma: no cover - tzlocal is a dependency of pwasync
    pass

_IANA_NAMES = available_timezones()


class UnknownTimeZone(ValueError):
    pass


def resolve(name: str) -> tzinfo:
    """The zone for a Graph time zone name; raises UnknownTimeZone for anything Graph rejects."""
    if name == "UTC":
        return UTC
    iana = WINDOWS_TO_IANA.get(name, name if name in _IANA_NAMES else None)
    if iana is None:
        raise UnknownTimeZone(name)
    try:
        return ZoneInfo(iana)
    except ZoneInfoNotFoundError as exc:
        raise UnknownTimeZone(name) from exc


def to_utc(local: datetime, zone_name: str) -> datetime:
    """A wall-clock time in a Graph-named zone as an aware UTC time."""
    return local.replace(tzinfo=resolve(zone_name)).astimezone(UTC)


def graph_date_time(moment: datetime, zone_name: str) -> dict[str, str]:
    """A ``dateTimeTimeZone`` with Graph's seven fractional digits, in the given zone."""
    local = moment.astimezone(resolve(zone_name)).replace(tzinfo=None)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0", "timeZone": zone_name}
