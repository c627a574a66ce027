"""``pwasync check``'s lines about reading the PWA: the permissions each API needs, and whether
the PWA's own time zone agrees with ``PWASYNC_PWA_TIMEZONE``.

Every failing line says what to grant. The permission names are PWA's (in SharePoint
permission mode the Portfolio Viewers group holds every one of the read permissions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from common.errors import PermanentApiError, PwasyncError
from common.ids import guid
from common.settings import Settings
from services.poller.projectserver_reader import ProjectServerReader
from services.poller.pwa_http import PwaHttp

PERMISSION_READ = "Access Project Server Reporting Service"
READ_PROJECTS = "'Log On', 'Open Project', SharePoint's 'Use Remote Interfaces'"
READ_SCHEDULES = "'View Project Schedule in Project Web App'"
READ_RESOURCES = "'View Enterprise Resource Data'"
_DENIED = (401, 403)


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool
    detail: str
    warn: bool = False  # worth a look, but nothing fails because of it

    def render(self) -> str:
        label = "FAIL" if not self.ok else ("warn" if self.warn else "ok  ")
        return f"{label}  {self.name}: {self.detail}"


def can_read_projectdata(pwa: PwaHttp, settings: Settings) -> CheckLine:
    name = f"read ProjectData ({PERMISSION_READ!r})"
    try:
        pwa.get_json(f"{pwa.site_url}/_api/ProjectData/Projects?$select=ProjectId&$top=1")
    except PermanentApiError as exc:
        if exc.status == 403:
            return CheckLine(
                name,
                False,
                f"access denied: grant the account the PWA permission {PERMISSION_READ!r}"
                + (
                    " and the app the delegated permission ProjectWebAppReporting.Read"
                    if settings.pwa_auth != "sharepoint_onprem"
                    else ""
                ),
            )
        return CheckLine(name, False, str(exc))
    except PwasyncError as exc:
        return CheckLine(name, False, str(exc))
    return CheckLine(name, True, f"signed in ({settings.pwa_auth}) and read the Projects feed")


def can_read_projectserver(
    pwa: PwaHttp, reader: ProjectServerReader, settings: Settings
) -> list[CheckLine]:
    """One line per permission the REST reader needs, each read the way the sync reads."""
    api = f"{pwa.site_url}/_api/ProjectServer"
    name = f"read projects ({READ_PROJECTS})"
    try:
        listed = _rows(pwa.get_json(f"{api}/Projects?$select=Id,Name&$top=1"))
    except PwasyncError as exc:
        return [CheckLine(name, False, _denied(exc, READ_PROJECTS))]
    if not listed:
        return [
            CheckLine(
                name,
                False,
                "signed in, but no published project is visible: grant 'Open Project' and "
                f"{READ_SCHEDULES} over all projects (or publish a first project)",
            )
        ]
    lines = [CheckLine(name, True, f"signed in ({settings.pwa_auth}) and listed projects")]
    name = f"read project schedules ({READ_SCHEDULES})"
    try:
        next(reader.task_ids(guid(listed[0]["Id"])), None)
        lines.append(CheckLine(name, True, f"read the tasks of {listed[0].get('Name')!r}"))
    except PwasyncError as exc:
        lines.append(CheckLine(name, False, _denied(exc, f"{READ_SCHEDULES} over all projects")))
    name = f"read enterprise resources ({READ_RESOURCES})"
    try:
        pwa.get_json(f"{api}/EnterpriseResources?$select=Id,Email&$top=1")
        lines.append(CheckLine(name, True, "read the assignees' e-mail addresses"))
    except PwasyncError as exc:
        lines.append(CheckLine(name, False, _denied(exc, READ_RESOURCES)))
    return lines


def time_zone_line(pwa: PwaHttp, zone: ZoneInfo) -> CheckLine:
    """Compare the PWA's regional time zone (its offsets) with the one dates are read in."""
    name = "PWA time zone"
    try:
        data = pwa.get_json(f"{pwa.site_url}/_api/web/RegionalSettings/TimeZone")
        theirs = regional_offsets(data.get("d", data))
    except (PwasyncError, KeyError, TypeError, ValueError) as exc:
        return CheckLine(name, True, f"could not be read ({exc}); not compared", warn=True)
    ours = zone_offsets(zone, datetime.now().year)
    description = data.get("d", data).get("Description") or "?"
    if theirs == ours:
        return CheckLine(name, True, f"{description} agrees with PWASYNC_PWA_TIMEZONE={zone.key}")
    return CheckLine(
        name,
        True,
        f"the PWA's regional time zone is {description} (UTC{_offset(theirs[0])}), but "
        f"PWASYNC_PWA_TIMEZONE={zone.key} is UTC{_offset(ours[0])}: task dates would be read "
        "in the wrong zone; set PWASYNC_PWA_TIMEZONE to the PWA's zone",
        warn=True,
    )


def regional_offsets(data: dict[str, Any]) -> tuple[int, int]:
    """(standard offset, daylight saving delta) in minutes, from SharePoint's TimeZone, whose
    ``Bias`` is what to add to local time to get UTC (so Berlin's is -60)."""
    info = data["Information"]
    return -int(info["Bias"]) - int(info.get("StandardBias") or 0), -int(
        info.get("DaylightBias") or 0
    )


def zone_offsets(zone: ZoneInfo, year: int) -> tuple[int, int]:
    """The same for an IANA zone: its standard offset and the largest DST delta of the year."""
    moments = [datetime(year, month, 15, 12, tzinfo=zone) for month in (1, 4, 7, 10)]
    standard = min(m.utcoffset() - (m.dst() or timedelta(0)) for m in moments)  # type: ignore[operator]
    delta = max((m.dst() or timedelta(0)) for m in moments)
    return int(standard.total_seconds() // 60), int(delta.total_seconds() // 60)


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    body = data.get("d", data)
    return list(body.get("results", body.get("value", [])) if isinstance(body, dict) else body)


def _denied(exc: PwasyncError, grant: str) -> str:
    if isinstance(exc, PermanentApiError) and exc.status in _DENIED:
        return f"access denied: grant the account {grant} ({exc})"
    return str(exc)


def _offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
