"""Which PWA API to read, found out once per process (``PWASYNC_PWA_API=auto``) or forced.

Project Server 2016/2019 and Project Online answer ProjectData, which is the cheaper read there
and stays their default. Subscription Edition has no ProjectData (``/_api/ProjectData`` answers
404, or 400 "The expression "ProjectData" is not valid"): the ProjectServer REST API is read.
An account that ProjectData refuses (403: no "Access Project Server Reporting Service") is read
through the ProjectServer API when that answers. The probe costs one or two requests at the
first read of a process, never one per poll.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from common.errors import PermanentApiError
from common.logging import get_logger
from common.settings import Settings
from services.poller.odata import property_name
from services.poller.projectdata import ProjectDataClient
from services.poller.projectserver_reader import ProjectServerReader
from services.poller.pwa_http import PwaHttp
from services.poller.source import (
    AssignmentRow,
    PlanSource,
    ProjectListing,
    ResourceRow,
    TaskRow,
    UnreadableRow,
)

log = get_logger(__name__)

PROJECTDATA, PROJECTSERVER = "projectdata", "projectserver"
API_NAMES = {
    PROJECTDATA: "ProjectData (OData reporting feed)",
    PROJECTSERVER: "ProjectServer REST API",
}
#: What ProjectData answers where it does not exist (404) or is not a known _api segment (400).
_ABSENT = (400, 404)


class ApiRefused(PermanentApiError):
    """No API could be read with this account; ``api`` is the one whose refusal says what to
    grant (the REST API on a site without ProjectData, else ProjectData)."""

    def __init__(self, message: str, *, api: str, status: int | None) -> None:
        super().__init__(message, status=status)
        self.api = api


@dataclass(frozen=True)
class ApiChoice:
    api: str  # PROJECTDATA or PROJECTSERVER
    reason: str

    def describe(self) -> str:
        return f"{API_NAMES[self.api]}: {self.reason}"


def choose_api(pwa: PwaHttp, setting: str) -> ApiChoice:
    """The API to read: the one ``setting`` forces, or the one the site offers."""
    if setting != "auto":
        return ApiChoice(setting, f"PWASYNC_PWA_API={setting}")
    try:
        pwa.get_json(f"{pwa.site_url}/_api/ProjectData/Projects?$select=ProjectId&$top=1")
        return ApiChoice(PROJECTDATA, "ProjectData answers (Project Server 2016/2019 or Online)")
    except PermanentApiError as exc:
        if exc.status not in (*_ABSENT, 403):
            raise
        refused = exc
    try:
        listed = pwa.get_json(f"{pwa.site_url}/_api/ProjectServer/Projects?$select=Id&$top=1")
    except PermanentApiError as exc:
        if refused.status in _ABSENT:  # Subscription Edition: the REST API's answer is it
            raise ApiRefused(str(exc), api=PROJECTSERVER, status=exc.status) from None
        raise ApiRefused(
            f"{pwa.service}: neither PWA API can be read. ProjectData: {refused}. "
            f"ProjectServer: {exc}",
            api=PROJECTDATA,
            status=exc.status,
        ) from None
    if refused.status in _ABSENT:
        return ApiChoice(
            PROJECTSERVER, "ProjectData is not there (Project Server Subscription Edition)"
        )
    if not _has_rows(listed):
        # The REST list is trimmed to what the account may open: empty says nothing, and the
        # account was most likely meant to read ProjectData. Its refusal is the answer.
        raise ApiRefused(str(refused), api=PROJECTDATA, status=refused.status)
    return ApiChoice(
        PROJECTSERVER,
        "ProjectData refused this account (it lacks 'Access Project Server Reporting "
        "Service'); the ProjectServer REST API answers",
    )


def _has_rows(data: dict) -> bool:
    body = data.get("d", data)
    return bool(body.get("results", body.get("value")) if isinstance(body, dict) else body)


def reader_for(choice: ApiChoice, pwa: PwaHttp, settings: Settings) -> PlanSource:
    if choice.api == PROJECTDATA:
        return ProjectDataClient(
            pwa,
            property_name(settings.create_event_field),
            reread_after=timedelta(seconds=settings.sync_overlap_seconds),
        )
    return ProjectServerReader(pwa, settings.create_event_field, settings.pwa_zone)


class PwaSource:
    """The ``PlanSource`` of the PWA: the reader of the chosen API, chosen at first use and
    kept for the process (a failed probe is tried again at the next use)."""

    def __init__(self, pwa: PwaHttp, settings: Settings) -> None:
        self._pwa = pwa
        self._settings = settings
        self._reader: PlanSource | None = None
        self.choice: ApiChoice | None = None

    @property
    def reader(self) -> PlanSource:
        if self._reader is None:
            self.choice = choose_api(self._pwa, self._settings.pwa_api)
            self._reader = reader_for(self.choice, self._pwa, self._settings)
            log.info("PWA API chosen", api=self.choice.api, reason=self.choice.reason)
        return self._reader

    @property
    def api(self) -> str:
        return self.reader.api

    @property
    def reread_after(self) -> timedelta:
        return self.reader.reread_after

    @property
    def requests_made(self) -> int:
        return self._pwa.requests_made

    def projects(self, *, project_ids: list[str] | None = None) -> Iterator[ProjectListing]:
        return self.reader.projects(project_ids=project_ids)

    def tasks(self, project_id: str) -> Iterator[TaskRow | UnreadableRow]:
        return self.reader.tasks(project_id)

    def assignments(self, project_id: str) -> Iterator[AssignmentRow]:
        return self.reader.assignments(project_id)

    def resources(self, resource_ids: set[str]) -> Iterator[ResourceRow]:
        return self.reader.resources(resource_ids)

    def task_projects(self, task_ids: list[str]) -> set[str]:
        return self.reader.task_projects(task_ids)
