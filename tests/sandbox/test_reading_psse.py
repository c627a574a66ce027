"""The product's readers against both editions of the sandbox: what a poll costs, the REST
reader's fallbacks and flag forms, Windows sign-in as farms run it, and check and fields on
Project Server Subscription Edition. The real plan source, the real Redis state; the publisher
is a list (the broker is not what is measured here)."""

from __future__ import annotations

import pytest

from common.errors import AuthenticationError
from common.http import new_http_client
from services.poller.commands import check, fields
from services.poller.connection import open_pwa
from services.poller.pwa_api import PwaSource
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration

ADELE = "adele.vance@contoso.onmicrosoft.com"
SVC = "svc-pwasync@contoso.onmicrosoft.com"
EVERY_PERMISSION = [
    "reporting",
    "manage_custom_fields",
    "use_remote_interfaces",
    "view_project_schedule",
    "view_enterprise_resources",
]
#: What one changed project costs on each API (the list, and its reads).
CHANGED_PROJECT = {
    "se": {
        "ProjectServer/Projects": 1,
        "ProjectServer/Projects()/Tasks": 1,
        "ProjectServer/Projects()/Assignments": 1,
    },
    "online": {
        "ProjectData/Projects": 1,
        "ProjectData/Projects()/Tasks": 1,
        "ProjectData/Projects()/Assignments": 1,
        "ProjectData/Resources": 1,
    },
}


@pytest.fixture(params=["se", "online"])
def edition(request):
    return request.param


@pytest.fixture
def site(edition, request):
    """(sandbox, control) of the edition."""
    suffix = "_se" if edition == "se" else ""
    return request.getfixturevalue(f"sandbox{suffix}"), request.getfixturevalue(f"control{suffix}")


def settings_of(sandbox, **overrides):
    return settings_for(sandbox, "default", **overrides)


@pytest.fixture
def poll(make_poll, site):
    return make_poll(*site)


@pytest.fixture
def poll_se(make_poll, sandbox_se, control_se):
    return make_poll(sandbox_se, control_se)


def test_an_idle_poll_costs_the_project_list_and_one_changed_project_is_read_alone(
    poll, site, edition
):
    _, control = site
    generated = control.generate(
        projects=30, tasks_per_project=5, flagged=True, ensure_field=True, mailboxes=5
    )
    first, published, _ = poll()
    assert len(published) == 150 and first.projects_read >= 30
    assert poll.source.api == {"se": "projectserver", "online": "projectdata"}[edition]

    summary, published, stats = poll()
    list_path = {"se": "ProjectServer/Projects", "online": "ProjectData/Projects"}[edition]
    assert published == [] and stats["by_path"] == {list_path: 1}
    assert summary.pwa_requests == 1

    changed = generated["project_ids"][12]
    task = next(p for p in control.tenant()["projects"] if p["id"] == changed)["task_ids"][0]
    control.update_task(task, name="Renamed in PWA")
    summary, published, stats = poll()
    assert [(m.task_id, m.task_name) for m in published] == [(task, "Renamed in PWA")]
    assert summary.projects_read == 1 and summary.tasks_unchanged == 4
    assert stats["by_path"] == CHANGED_PROJECT[edition]


def test_the_draft_is_neither_read_nor_deleted_and_projectdata_is_never_asked(poll_se, control_se):
    control_se.generate(projects=2, tasks_per_project=2, flagged=True, ensure_field=True)
    summary, published, stats = poll_se(full=True)
    assert summary.projects_skipped["never_published"] == 1
    assert not [m for m in published if "never published" in m.project_name]
    summary, _, stats = poll_se()
    assert summary.projects_deleted == 0 and summary.tasks_removed == 0
    assert not [path for path in stats["by_path"] if path.startswith("ProjectData")]


@pytest.mark.parametrize(
    ("form", "unset"),
    [("bool", "null"), ("text", "missing"), ("number", "null"), ("yesno", "missing")],
)
def test_every_flag_form_selects_the_same_tasks(control_se, poll_se, form, unset):
    generated = control_se.generate(
        projects=1, tasks_per_project=6, flagged=True, ensure_field=True
    )
    control_se.flag_tasks(generated["task_ids"][:2], value=None)
    control_se.config(pwa_flag_value_form=form, pwa_flag_unset=unset)
    _, published, _ = poll_se()
    assert {str(m.task_id) for m in published} >= set(generated["task_ids"][2:])
    assert not {str(m.task_id) for m in published} & set(generated["task_ids"][:2])


def test_a_refused_tasks_path_is_read_through_expand(poll_se, control_se):
    generated = control_se.generate(
        projects=2, tasks_per_project=3, flagged=True, ensure_field=True
    )
    control_se.config(pwa_refuse_task_navigation=True)
    _, published, _ = poll_se()
    assert {str(m.task_id) for m in published} >= set(generated["task_ids"])
    assert all(m.assignees and m.assignees[0].email for m in published if m.task_name)


# --- Windows sign-in as farms run it ------------------------------------------------------------


def read_list(settings):
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        return list(PwaSource(open_pwa(settings, http), settings).projects())


@pytest.mark.parametrize("schemes", [["Negotiate"], ["NTLM"], ["NTLM", "Negotiate"]])
def test_either_windows_scheme_signs_in_with_extended_protection(sandbox_se, control_se, schemes):
    control_se.config(pwa_auth_schemes=schemes)  # Extended Protection is on in this edition
    assert len(read_list(settings_of(sandbox_se))) == 4  # three published and the draft


@pytest.mark.parametrize(
    ("change", "password"),
    [({}, "wrong"), ({"locked": True}, None), ({"password_expired": True}, None)],
)
def test_a_refused_windows_sign_in_is_one_clear_line(sandbox_se, control_se, change, password):
    if change:
        control_se.update_user(SVC, **change)
    settings = settings_of(sandbox_se, **({"pwa_password": password} if password else {}))
    with pytest.raises(AuthenticationError) as raised:
        read_list(settings)
    message = str(raised.value)
    assert message.startswith("Project Server refused the Windows sign-in (Negotiate) of CONTOSO")
    assert (
        "expired password" in message and sandbox_se.settings["PWASYNC_PWA_PASSWORD"] not in message
    )


def test_a_zone_offering_no_windows_scheme_is_one_clear_line(sandbox_se, control_se):
    control_se.config(pwa_auth_schemes=["Basic"])
    with pytest.raises(AuthenticationError, match="offers no Windows sign-in pwasync speaks"):
        read_list(settings_of(sandbox_se))


def test_plain_http_is_refused_unless_a_lab_allows_it(sandbox_se):
    url = sandbox_se.settings["PWASYNC_PWA_URL"].replace("https://", "http://")
    with pytest.raises(Exception, match="PWASYNC_PWA_URL must be https://"):
        settings_of(sandbox_se, pwa_url=url).require_pwa()
    settings_of(sandbox_se, pwa_url=url, pwa_allow_http="true").require_pwa()


# --- check and fields on Subscription Edition ---------------------------------------------------


def test_fields_and_check_work_without_projectdata(sandbox_se, control_se):
    settings = settings_of(sandbox_se)
    lines, ok = fields(settings, "create")
    assert ok and lines[0].startswith("created Task flag field 'Create event'"), lines
    assert fields(settings, "verify")[1]
    lines = check(settings, ADELE)
    assert [line.name for line in lines] == [
        "PWA reachable",
        "PWA API",
        "read projects ('Log On', 'Open Project', SharePoint's 'Use Remote Interfaces')",
        "read project schedules ('View Project Schedule in Project Web App')",
        "read enterprise resources ('View Enterprise Resource Data')",
        "PWA time zone",
        "permission 'Manage Enterprise Custom Fields'",
        "flag field 'Create event' (Task, Flag)",
        "publish receiver",
        "Graph token (app-only)",
        f"mailbox {ADELE}",
    ]
    assert all(line.ok and not line.warn for line in lines), [line.render() for line in lines]
    assert "ProjectData is not there" in lines[1].detail
    assert not [p for p in control_se.stats()["pwa"]["by_path"] if "ProjectData/" in p[:13]][1:]


@pytest.mark.parametrize(
    ("missing", "line", "grant"),
    [
        ("use_remote_interfaces", "read projects", "'Log On'"),
        ("view_project_schedule", "read projects", "'Open Project'"),
        ("view_enterprise_resources", "read enterprise resources", "'View Enterprise Resource"),
    ],
)
def test_check_names_the_permission_the_rest_reader_lacks(
    sandbox_se, control_se, missing, line, grant
):
    control_se.update_user(SVC, pwa_permissions=[p for p in EVERY_PERMISSION if p != missing])
    lines = check(settings_of(sandbox_se), None)
    failing = [entry for entry in lines if not entry.ok and entry.name.startswith(line)]
    assert failing and grant in failing[0].detail, [entry.render() for entry in lines]


def test_check_warns_when_the_pwa_time_zone_disagrees(sandbox_se, control_se):
    control_se.config(pwa_regional_time_zone="America/New_York")
    lines = {line.name: line for line in check(settings_of(sandbox_se), None)}
    zone = lines["PWA time zone"]
    assert zone.ok and zone.warn and "UTC-05:00" in zone.detail and "UTC+01:00" in zone.detail
    assert zone.render().startswith("warn")
