"""``GET {site}/_api/web/RegionalSettings/TimeZone``: the site's time zone as SharePoint
reports it (``SP.TimeZone``), which is the zone PWA's wall-clock dates are in.

``Information`` holds Windows' TIME_ZONE_INFORMATION biases in minutes: UTC = local time +
``Bias`` (+ ``DaylightBias`` in summer). They are derived from the IANA zone; ``Id`` and
``Description`` are SharePoint's for the zones tabled below, generic for the others. The
``pwa_regional_time_zone`` setting makes the site report another zone than the tenant's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.odata_format import Format, render
from sandbox.pwa import PwaCall, pwa_endpoint

PATH_KEY = "web/RegionalSettings/TimeZone"

# IANA zone -> SharePoint's time zone id and description (SPTimeZone; PnP's TimeZone enum).
_SHAREPOINT_ZONES = {
    "Europe/London": (2, "(UTC) Dublin, Edinburgh, Lisbon, London"),
    "Europe/Paris": (3, "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris"),
    "Europe/Berlin": (4, "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"),
    "America/New_York": (10, "(UTC-05:00) Eastern Time (US and Canada)"),
    "America/Chicago": (11, "(UTC-06:00) Central Time (US and Canada)"),
    "America/Denver": (12, "(UTC-07:00) Mountain Time (US and Canada)"),
    "America/Los_Angeles": (13, "(UTC-08:00) Pacific Time (US and Canada)"),
    "UTC": (93, "(UTC) Coordinated Universal Time"),
}


def biases(zone: ZoneInfo, year: int) -> dict[str, int]:
    """Bias, StandardBias and DaylightBias (minutes) of a zone in a year."""
    samples = [datetime(year, month, 1, 12, tzinfo=zone) for month in (1, 7)]
    standard = next((s for s in samples if not s.dst()), samples[0])
    daylight = next((s for s in samples if s.dst()), None)
    offset = standard.utcoffset() or timedelta(0)
    saving = (daylight.dst() or timedelta(0)) if daylight else timedelta(0)
    return {
        "Bias": -int(offset.total_seconds() // 60),
        "DaylightBias": -int(saving.total_seconds() // 60),
        "StandardBias": 0,
    }


def _description(zone: ZoneInfo, bias: int) -> tuple[int, str]:
    if zone.key in _SHAREPOINT_ZONES:
        return _SHAREPOINT_ZONES[zone.key]
    minutes = -bias
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return 0, f"(UTC{sign}{hours:02d}:{rest:02d}) {zone.key}"


async def _time_zone(call: PwaCall) -> Response:
    name = call.sandbox.config.pwa_regional_time_zone
    zone = ZoneInfo(name) if name else call.sandbox.tenant.time_zone
    information: dict[str, Any] = biases(zone, call.sandbox.tenant.now().year)
    zone_id, description = _description(zone, information["Bias"])
    properties = {"Description": description, "Id": zone_id}
    url = call.request.url
    api = f"{url.scheme}://{url.netloc}{call.sandbox.tenant.site_path}/_api"
    uri = f"{api}/Web/RegionalSettings/TimeZone"
    if call.fmt is Format.VERBOSE:
        information = {"__metadata": {"type": "SP.TimeZoneInformation"}, **information}
        entity = {"__metadata": {"id": uri, "uri": uri, "type": "SP.TimeZone"}, **properties}
        return render({"d": {**entity, "Information": information}}, call.fmt)
    body: dict[str, Any] = {**properties, "Information": information}
    if call.fmt is Format.MINIMAL:
        body = {
            "odata.metadata": f"{api}/$metadata#SP.ApiData.TimeZones/@Element",
            "odata.type": "SP.TimeZone",
            "odata.id": uri,
            "odata.editLink": "Web/RegionalSettings/TimeZone",
            **body,
        }
    return render(body, call.fmt)


def _path_key(request: Request) -> str:
    return PATH_KEY


def routes(site_path: str) -> list[Route]:
    endpoint = pwa_endpoint(_time_zone, _path_key)
    # SharePoint's URLs are case-insensitive; clients write both spellings of "web".
    return [
        Route(f"{site_path}/_api/{web}/RegionalSettings/TimeZone", endpoint, methods=["GET"])
        for web in ("web", "Web")
    ]
