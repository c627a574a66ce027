"""The poller side's one-shot commands: ``pwasync fields``, ``pwasync connect``, ``pwasync check``.

Each returns the lines to print and whether it succeeded; ``services/cli.py`` prints them and
turns the result into the exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx

from common.errors import PermanentApiError, PwasyncError
from common.http import new_http_client, transport_errors
from common.identity import GraphAppTokens
from common.mailboxes import MailboxPolicy
from common.settings import Settings
from services.ops.plans import an_assignee_mailbox, open_plans
from services.poller.connection import connect, open_pwa, redis_if_needed, token_store
from services.poller.custom_fields import CustomFieldsClient, FieldState
from services.poller.dataverse_check import dataverse_fields, dataverse_lines
from services.poller.projectserver_reader import ProjectServerReader
from services.poller.pwa_api import PROJECTDATA, ApiRefused, PwaSource
from services.poller.pwa_check import (
    CheckLine,
    can_read_projectdata,
    can_read_projectserver,
    time_zone_line,
)
from services.poller.pwa_http import PwaHttp
from services.poller.source import PlanSource
from services.receiver.commands import receiver_lines

PERMISSION_FIELDS = "Manage Enterprise Custom Fields"


# --- fields ----------------------------------------------------------------------------------


def fields(settings: Settings, action: str) -> tuple[list[str], bool]:
    if settings.source == "planner":
        from services.poller.planner_check import planner_fields

        with _http_client(settings) as http:
            return planner_fields(settings, http, action)
    if settings.source == "dataverse":
        with _http_client(settings) as http:
            return dataverse_fields(
                settings,
                http,
                action,
                select_by=settings.selection,
                label=settings.create_event_label,
            )
    settings.require_pwa()
    name = settings.create_event_field
    lines: list[str] = []
    with _http_client(settings) as http:
        pwa = open_pwa(settings, http, redis_if_needed(settings))
        api = PwaSource(pwa, settings).api
        client = CustomFieldsClient(pwa)
        task_entity = client.task_entity_id()
        check = client.check(name, task_entity, projectdata=api == PROJECTDATA)
        if action == "create" and check.state is FieldState.MISSING:
            try:
                field_id = client.create_flag_field(name, task_entity)
                lines.append(f"created Task flag field {name!r} (id {field_id})")
            except PermanentApiError as exc:
                if "11519" not in str(exc) and "AlreadyExists" not in str(exc):
                    raise
                lines.append(f"field {name!r} was created meanwhile by someone else")
            check = client.check(name, task_entity, projectdata=api == PROJECTDATA)
        elif action == "create" and check.ok:
            lines.append(f"field {name!r} exists already; nothing to create")
        if check.ok and api == PROJECTDATA and not client.reported_in_projectdata(name):
            lines.append(
                f"field {name!r}: exists, but ProjectData does not expose it yet "
                "(the reporting schema refreshes after a publish; try again shortly)"
            )
            return lines, False
    lines.append(f"field {name!r}: {check.state.value}: {check.detail}")
    return lines, check.ok


# --- connect ---------------------------------------------------------------------------------


def connect_operator(settings: Settings, show: Callable[[str], None]) -> str:
    """``pwasync connect``: the device-code sign-in, stored encrypted in Redis."""
    if settings.pwa_auth != "oauth":
        raise PwasyncError(
            f"pwasync connect is for PWASYNC_PWA_AUTH=oauth (this is {settings.pwa_auth}, which "
            "signs in with the configured account)"
        )
    settings.require_pwa()
    client = redis_if_needed(settings)
    store = token_store(settings, client)
    with _http_client(settings) as http:
        return connect(settings, http, store, show=show)


# --- check -----------------------------------------------------------------------------------


def check(settings: Settings, mailbox: str | None) -> list[CheckLine]:
    """Every prerequisite, one line each; the first failure on a side skips what depends on it.

    With no mailbox named, the mailbox of one assignee found in the plans is tested (the line
    before it says whose), so a bare ``pwasync check`` passes on a system ready to sync."""
    lines: list[CheckLine] = []
    named = mailbox or settings.check_mailbox
    with _http_client(settings) as http:
        if settings.source == "planner":
            from services.poller.planner_check import planner_lines

            chosen, found = _test_mailbox(settings, named, lambda: _plans_feed(settings, http))
            lines += [*found, *planner_lines(settings, http, chosen)]
        else:
            if settings.source == "dataverse":
                plan_lines = dataverse_lines(
                    settings, http, select_by=settings.selection, label=settings.create_event_label
                )
                ready = all(line.ok for line in plan_lines)
                source = _plans_feed(settings, http) if ready and not named else None
            else:
                plan_lines, source = _check_pwa(settings, http)
            chosen, found = _test_mailbox(settings, named, lambda: source)
            lines += [*plan_lines, *found]
        lines += _check_graph(settings, http, chosen)
    return lines


def _test_mailbox(
    settings: Settings, named: str | None, plans: Callable[[], PlanSource | None]
) -> tuple[str | None, list[CheckLine]]:
    """The mailbox to test: the one named, else one found in the plans (with the line that
    says whose it is)."""
    if named:
        return named, []
    chosen, line = _mailbox_from_plans(settings, plans())
    return chosen, [line]


def _plans_feed(settings: Settings, http: httpx.Client) -> PlanSource | None:
    """The plans, read-only (check keeps none of a reader's change-detection state)."""
    try:
        return open_plans(settings, http, None).feed
    except PwasyncError:
        return None  # the check's lines say why


def _mailbox_from_plans(
    settings: Settings, source: PlanSource | None
) -> tuple[str | None, CheckLine]:
    how = "pass --mailbox or set PWASYNC_CHECK_MAILBOX"
    if source is None:
        return None, CheckLine(
            "test mailbox", False, f"none named, and the plans could not be read to find one: {how}"
        )
    try:
        found = an_assignee_mailbox(source, MailboxPolicy.from_settings(settings))
    except PwasyncError as exc:
        return None, CheckLine("test mailbox", False, f"none named; finding one failed: {exc}")
    if found is None:
        return None, CheckLine(
            "test mailbox", False, f"none named, and no assignee in the plans has a mailbox: {how}"
        )
    return found.mailbox, CheckLine(
        "test mailbox",
        True,
        f"{found.mailbox}, found in the plans: {found.assignee}, assigned to {found.task!r} in "
        f"{found.project!r} ({how} to test another)",
    )


def _check_pwa(settings: Settings, http: httpx.Client) -> tuple[list[CheckLine], PwaSource | None]:
    """The PWA's lines, and its plan source when every read it needs is allowed."""
    try:
        settings.require_pwa()
        pwa = open_pwa(settings, http, redis_if_needed(settings))
    except PwasyncError as exc:
        return [CheckLine("PWA sign-in", False, str(exc))], None
    assert settings.pwa_url is not None
    lines = [_reachable(http, settings.pwa_url)]
    if not lines[0].ok:
        return lines, None
    source = PwaSource(pwa, settings)
    try:
        api = source.api
    except ApiRefused as exc:
        if exc.status not in (401, 403):
            return [*lines, CheckLine("PWA sign-in and API", False, str(exc))], None
        return [*lines, *_read_lines(exc.api, pwa, settings)], None  # they say what to grant
    except PwasyncError as exc:
        return [*lines, CheckLine("PWA sign-in and API", False, str(exc))], None
    assert source.choice is not None
    lines.append(CheckLine("PWA API", True, source.choice.describe()))
    reads = _read_lines(api, pwa, settings)
    lines += reads
    if not all(line.ok for line in reads):
        return lines, None
    lines.append(time_zone_line(pwa, settings.pwa_zone))
    lines += _field_lines(settings, pwa, reported_needed=api == PROJECTDATA)
    return lines + receiver_lines(settings, pwa), source


def _read_lines(api: str, pwa: PwaHttp, settings: Settings) -> list[CheckLine]:
    """Whether the account may read what the sync reads on that API, one line a permission."""
    if api == PROJECTDATA:
        return [can_read_projectdata(pwa, settings)]
    reader = ProjectServerReader(pwa, settings.create_event_field, settings.pwa_zone)
    return can_read_projectserver(pwa, reader, settings)


def _field_lines(settings: Settings, pwa: PwaHttp, *, reported_needed: bool) -> list[CheckLine]:
    client = CustomFieldsClient(pwa)
    name = settings.create_event_field
    try:
        task_entity = client.task_entity_id()
        field = client.check(name, task_entity, projectdata=reported_needed)
        reported = field.ok and (not reported_needed or client.reported_in_projectdata(name))
    except PwasyncError as exc:
        return [CheckLine("enterprise custom fields", False, str(exc))]
    lines = [_field_permission_line(field.ok)]
    detail = (
        field.detail
        if not field.ok or reported
        else (
            "exists, but ProjectData does not expose it yet (the reporting schema refreshes after "
            "a publish)"
        )
    )
    lines.append(CheckLine(f"flag field {name!r} (Task, Flag)", reported, detail))
    return lines


def _field_permission_line(field_exists: bool) -> CheckLine:
    """The permission is not read: neither REST API exposes a user's Project Server global
    permissions, and asking CustomFields/Add to refuse a field would create a real one on a
    server that validates before it checks permissions. Only `fields create` needs it, and
    says so when it is refused."""
    return CheckLine(
        f"permission {PERMISSION_FIELDS!r}",
        True,
        "not checked; not needed while the flag field exists"
        if field_exists
        else "not checked; `pwasync fields create` needs it to create the missing field",
    )


def _reachable(http: httpx.Client, site_url: str) -> CheckLine:
    try:
        with transport_errors("PWA"):
            response = http.get(f"{site_url}/_api/contextinfo")
    except PwasyncError as exc:
        return CheckLine("PWA reachable", False, str(exc))
    # Any HTTP answer (401 without credentials, 405 for the GET) means the site is there.
    return CheckLine("PWA reachable", True, f"{site_url} answered HTTP {response.status_code}")


def _check_graph(settings: Settings, http: httpx.Client, mailbox: str | None) -> list[CheckLine]:
    try:
        tokens = GraphAppTokens(settings, http)
        token = tokens.token()
    except PwasyncError as exc:
        return [CheckLine("Graph token (app-only)", False, str(exc))]
    lines = [CheckLine("Graph token (app-only)", True, "obtained")]
    if not mailbox:
        return lines  # the line before says why none is tested
    url = f"{settings.graph_url}/users/{quote(mailbox)}/calendar/events?$top=1&$select=id"
    try:
        with transport_errors("Graph"):
            response = http.get(url, headers={"Authorization": f"Bearer {token}"})
    except PwasyncError as exc:
        return [*lines, CheckLine(f"mailbox {mailbox}", False, str(exc))]
    if response.is_success:
        lines.append(CheckLine(f"mailbox {mailbox}", True, "calendar reachable"))
        return lines
    code = _graph_error_code(response)
    hint = {
        403: "access denied: consent Calendars.ReadWrite (application) for the app, and check "
        "that Exchange RBAC for Applications / the application access policy includes it",
        404: "not found, or it has no Exchange Online mailbox (guest, unlicensed, on-premises)",
    }.get(response.status_code, "unexpected answer")
    lines.append(
        CheckLine(f"mailbox {mailbox}", False, f"HTTP {response.status_code} {code}: {hint}")
    )
    return lines


def _graph_error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("code", ""))
    except ValueError:
        return ""


def _http_client(settings: Settings) -> httpx.Client:
    return new_http_client(ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds)
