"""Reading the ProjectServer REST API: recorded answer shapes (verbose and light), every flag
form, "no date", paging by relative links, the $expand fallback, and which API is chosen."""

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from common.errors import PermanentApiError, RetryableApiError
from common.settings import load_settings
from services.poller.paging import resolve_link
from services.poller.projectserver_reader import (
    ProjectServerReader,
    flag_property_of,
    parse_flag,
    project_listing,
    rest_date,
    task_row,
)
from services.poller.pwa_api import PROJECTDATA, PROJECTSERVER, ApiRefused, choose_api
from services.poller.source import ProjectRow, TaskRow, UnpublishedProject, UnreadableRow

SITE = "https://pwa.contoso.local/pwa"
BERLIN = ZoneInfo("Europe/Berlin")
API = f"{SITE}/_api/ProjectServer"
# Fixed: a test id holds PROJECT, and pytest-xdist's workers must collect the same ids.
PROJECT = "3f2a9c1e-5b7d-4e8f-a1c2-6d9e0b4f7a13"
TASK = "b81c4e2f-9a3d-4c5b-8e7f-1a2b3c4d5e6f"
RESOURCE = "c47d2e9a-1b3f-4a6c-9d8e-7f0a1b2c3d4e"
FIELD_ID = uuid.UUID("8d3b5c3e-1f0a-4b6e-9f7a-0c1d2e3f4a5b")
FLAG = f"Custom_x005f_{FIELD_ID.hex}"


class Answers:
    """PwaHttp's part the reader uses: answers by URL prefix, in order; records every URL."""

    service = "Project Server"

    def __init__(self, *answers):
        self.site_url = SITE
        self.answers = list(answers)
        self.urls = []

    @property
    def requests_made(self):
        return len(self.urls)

    def get_json(self, url):
        self.urls.append(url)
        for index, (prefix, answer) in enumerate(self.answers):
            if url.startswith(prefix):
                del self.answers[index]
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"unexpected request {url}")


FIELDS = (
    f"{API}/CustomFields",
    {
        "value": [
            {
                "Id": str(uuid.uuid4()),
                "Name": "Cost center",
                "InternalName": "Custom_1",
                "FieldType": 21,
            },
            {
                "Id": str(FIELD_ID),
                "Name": "Create event",
                "InternalName": f"Custom_{FIELD_ID.hex}",
                "FieldType": 17,
            },
        ]
    },
)


def rest_task(**values):
    row = {
        "Id": str(TASK),
        "Name": "Site survey",
        "Start": "2026-12-02T08:00:00",
        "Finish": "2026-12-03T17:00:00",
        "IsSummary": False,
        "OutlineLevel": 2,
        FLAG: True,
    }
    return {**row, **values}


@pytest.mark.parametrize(
    ("value", "flagged"),
    [
        (True, True),
        (False, False),
        ("True", True),
        ("False", False),
        ("yes", True),
        ("No", False),
        (1, True),
        (0, False),
        ("1", True),
        (None, False),
        (["Yes"], True),
        ({"results": ["True"]}, True),
        ([], False),
    ],
)
def test_every_form_of_a_flag_value_reads(value, flagged):
    assert parse_flag(value) is flagged


def test_an_absent_flag_is_not_flagged_and_an_odd_one_is_an_unreadable_row():
    row = rest_task()
    del row[FLAG]
    assert task_row(PROJECT, row, FLAG).flagged is False
    odd = task_row(PROJECT, rest_task(**{FLAG: "maybe"}), FLAG)
    assert isinstance(odd, UnreadableRow) and odd.key == TASK and FLAG in odd.problem
    assert isinstance(
        task_row(PROJECT, rest_task(**{FLAG: ["Entry_1", "Entry_2"]}), FLAG), UnreadableRow
    )


def test_no_date_is_0001_01_01_and_dates_are_the_pwa_wall_clock():
    row = task_row(
        PROJECT, rest_task(Start="0001-01-01T00:00:00", Finish="2026-12-03T17:00:00.5"), FLAG
    )
    assert isinstance(row, TaskRow)
    assert row.start is None and row.finish == datetime(2026, 12, 3, 17, 0, 0, 500000)
    assert isinstance(task_row(PROJECT, rest_task(Start="03.12.2026"), FLAG), UnreadableRow)


def test_a_never_published_project_is_a_draft_and_a_bad_row_is_unreadable():
    base = {
        "Id": str(PROJECT),
        "Name": "P",
        "ProjectType": 0,
        "LastPublishedDate": "2026-11-30T10:00:00",
    }
    assert project_listing(base) == ProjectRow(PROJECT, "P", 0, datetime(2026, 11, 30, 10))
    draft = project_listing({**base, "LastPublishedDate": "0001-01-01T00:00:00"})
    assert draft == UnpublishedProject(PROJECT, "P")
    assert isinstance(project_listing({**base, "ProjectType": "master"}), UnreadableRow)
    assert isinstance(project_listing({**base, "Id": "nope"}), UnreadableRow)


def test_the_flag_property_is_the_internal_name_escaped():
    rows = FIELDS[1]["value"]
    assert flag_property_of(rows, "Create event", "Project Server") == FLAG
    without_internal = [{"Id": str(FIELD_ID), "Name": "Create event", "FieldType": 17}]
    assert flag_property_of(without_internal, "Create event", "Project Server") == FLAG
    with pytest.raises(PermanentApiError, match="no enterprise custom field 'create event'"):
        flag_property_of(rows, "create event", "Project Server")
    with pytest.raises(PermanentApiError, match="not a Flag"):
        flag_property_of(rows, "Cost center", "Project Server")


def test_projects_follow_relative_next_links_in_both_formats():
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    http = Answers(
        (
            f"{API}/Projects?",
            {
                "d": {
                    "results": [
                        {
                            "__metadata": {"type": "PS.PublishedProject"},
                            "Id": str(first),
                            "Name": "A",
                            "ProjectType": 0,
                            "LastPublishedDate": "2026-11-30T10:00:00",
                            "Tasks": {"__deferred": {"uri": "…"}},
                        }
                    ],
                    "__next": "Projects?$select=Id&$skip=1",
                }
            },
        ),
        (
            f"{API}/Projects?$select=Id&$skip=1",
            {
                "value": [
                    {
                        "Id": str(second),
                        "Name": "B",
                        "ProjectType": 6,
                        "LastPublishedDate": "2026-11-29T10:00:00",
                    }
                ],
                "@odata.nextLink": None,
            },
        ),
    )
    listed = list(ProjectServerReader(http, "Create event", BERLIN).projects())
    assert [(p.project_id, p.project_type) for p in listed] == [(first, 0), (second, 6)]
    assert http.urls[0] == f"{API}/Projects?$select=Id,Name,ProjectType,LastPublishedDate"


def test_tasks_and_assignments_are_read_by_navigation_with_the_assignee_expanded():
    http = Answers(
        FIELDS,
        (f"{API}/Projects('{PROJECT}')/Tasks?", {"value": [rest_task()]}),
        (
            f"{API}/Projects('{PROJECT}')/Assignments?",
            {
                "d": {
                    "results": [
                        {
                            "Id": str(uuid.uuid4()),
                            "Task": {"Id": str(TASK)},
                            "Resource": {
                                "Id": str(RESOURCE),
                                "Name": "Adele",
                                "Email": "adele@contoso.com",
                            },
                        },
                        {"Id": str(uuid.uuid4()), "Task": {"Id": str(TASK)}, "Resource": None},
                        {
                            "Id": str(uuid.uuid4()),
                            "Task": {"Id": str(TASK)},
                            "Resource": {"Id": str(uuid.uuid4()), "Name": "No mail", "Email": ""},
                        },
                    ]
                }
            },
        ),
    )
    reader = ProjectServerReader(http, "Create event", BERLIN)
    [task] = reader.tasks(PROJECT)
    assert task.flagged and task.name == "Site survey" and not task.is_project_summary
    with_mail, without_mail = reader.assignments(PROJECT)
    assert with_mail.resource is not None and with_mail.resource.email == "adele@contoso.com"
    assert without_mail.resource is None  # looked up as an enterprise resource
    assert f"$select=Id,Name,Start,Finish,IsSummary,OutlineLevel,{FLAG}" in http.urls[1]
    assert "$expand=Task,Resource" in http.urls[2]


def test_a_refused_navigation_falls_back_to_expand_for_the_rest_of_the_process():
    other = str(uuid.uuid4())
    refused = PermanentApiError("Project Server answered 404: not found", status=404)
    http = Answers(
        FIELDS,
        (f"{API}/Projects('{PROJECT}')/Tasks?", refused),
        (
            f"{API}/Projects?$filter=Id%20eq%20guid'{PROJECT}'",
            {"d": {"results": [{"Id": str(PROJECT), "Tasks": {"results": [rest_task()]}}]}},
        ),
        (
            f"{API}/Projects?$filter=Id%20eq%20guid'{other}'",
            {"value": [{"Id": str(other), "Tasks": [rest_task(Id=str(other))]}]},
        ),
    )
    reader = ProjectServerReader(http, "Create event", BERLIN)
    assert [t.task_id for t in reader.tasks(PROJECT)] == [TASK]
    assert [t.task_id for t in reader.tasks(other)] == [other]
    assert "$expand=Tasks" in http.urls[2] and f"Tasks/{FLAG}" in http.urls[2]
    assert len(http.urls) == 4  # the second project went straight to $expand


def test_a_project_gone_between_list_and_read_is_retried_not_emptied():
    http = Answers(
        FIELDS,
        (f"{API}/Projects('{PROJECT}')/Tasks?", PermanentApiError("404", status=404)),
        (f"{API}/Projects?$filter", {"value": []}),
    )
    with pytest.raises(RetryableApiError, match="no longer there"):
        list(ProjectServerReader(http, "Create event", BERLIN).tasks(PROJECT))


def settings(api="auto"):
    return load_settings(
        {
            "PWASYNC_PWA_URL": SITE,
            "PWASYNC_PWA_AUTH": "sharepoint_onprem",
            "PWASYNC_PWA_USERNAME": "CONTOSO\\svc",
            "PWASYNC_PWA_PASSWORD": "pw",
            "PWASYNC_PWA_API": api,
        }
    ).pwa_api


def test_projectdata_is_chosen_where_it_answers_and_projectserver_where_it_is_gone():
    on_2019 = Answers((f"{SITE}/_api/ProjectData/Projects", {"d": {"results": []}}))
    assert choose_api(on_2019, settings()).api == PROJECTDATA and len(on_2019.urls) == 1
    gone = PermanentApiError(
        'Project Server answered 404: The expression "ProjectData" is not valid.', status=404
    )
    on_se = Answers((f"{SITE}/_api/ProjectData", gone), (f"{API}/Projects", {"value": []}))
    choice = choose_api(on_se, settings())
    assert choice.api == PROJECTSERVER and "Subscription Edition" in choice.reason
    refused = PermanentApiError("403", status=403)
    no_reporting = Answers(
        (f"{SITE}/_api/ProjectData", refused), (f"{API}/Projects", {"value": [{"Id": "x"}]})
    )
    assert "Access Project Server Reporting Service" in choose_api(no_reporting, settings()).reason
    # An empty, security-trimmed REST list proves nothing: ProjectData's refusal is the answer.
    trimmed = Answers((f"{SITE}/_api/ProjectData", refused), (f"{API}/Projects", {"value": []}))
    with pytest.raises(ApiRefused) as raised:
        choose_api(trimmed, settings())
    assert raised.value.api == PROJECTDATA and raised.value.status == 403


def test_a_forced_api_costs_no_probe_and_a_refusal_names_the_api_to_grant_on():
    forced = Answers()
    assert choose_api(forced, settings("projectserver")).api == PROJECTSERVER and forced.urls == []
    se = Answers(
        (f"{SITE}/_api/ProjectData", PermanentApiError("ProjectData: 404", status=404)),
        (f"{API}/Projects", PermanentApiError("ProjectServer: 403", status=403)),
    )
    with pytest.raises(ApiRefused, match="^ProjectServer: 403$") as raised:
        choose_api(se, settings())
    assert raised.value.api == PROJECTSERVER
    on_2019 = Answers(
        (f"{SITE}/_api/ProjectData", PermanentApiError("ProjectData: 403", status=403)),
        (f"{API}/Projects", PermanentApiError("ProjectServer: 403", status=403)),
    )
    with pytest.raises(
        ApiRefused, match="neither PWA API can be read.*ProjectServer: 403"
    ) as raised:
        choose_api(on_2019, settings())
    assert raised.value.api == PROJECTDATA


@pytest.mark.parametrize(
    ("page", "link", "resolved"),
    [
        (
            f"{API}/Projects?$select=Id",
            "Projects?$select=Id&$skip=100",
            f"{API}/Projects?$select=Id&$skip=100",
        ),
        (f"{API}/Projects?$select=Id", "ProjectServer/Projects?$skip=1", f"{API}/Projects?$skip=1"),
        (
            f"{API}/Projects('{PROJECT}')/Tasks?$select=Id",
            "Tasks?$skip=300",
            f"{API}/Projects('{PROJECT}')/Tasks?$skip=300",
        ),
        (
            f"{API}/Projects('{PROJECT}')/Tasks?$select=Id",
            f"Projects('{PROJECT}')/Tasks?$skip=300",
            f"{API}/Projects('{PROJECT}')/Tasks?$skip=300",
        ),
        (
            f"{API}/Projects?$select=Id",
            "_api/ProjectServer/Projects?$skip=1",
            f"{API}/Projects?$skip=1",
        ),
        (
            f"{API}/Projects?$select=Id",
            "/pwa/_api/ProjectServer/Projects?$skip=1",
            f"{API}/Projects?$skip=1",
        ),
        (f"{API}/Projects?$select=Id", f"{API}/Projects?$skip=1", f"{API}/Projects?$skip=1"),
        (f"{API}/Projects?$select=Id", "?$skip=1", f"{API}/Projects?$skip=1"),
    ],
)
def test_relative_next_links_resolve_however_they_are_rooted(page, link, resolved):
    assert resolve_link(page, link) == resolved


def test_a_date_with_an_offset_is_the_instant_on_the_pwa_wall_clock():
    row = task_row(PROJECT, rest_task(Start="2026-12-02T07:00:00Z"), FLAG, BERLIN)
    assert row.start == datetime(2026, 12, 2, 8, 0)
    row = task_row(PROJECT, rest_task(Start="2026-12-02T08:00:00+01:00"), FLAG, BERLIN)
    assert row.start == datetime(2026, 12, 2, 8, 0)
    assert rest_date("0001-01-01T00:00:00Z", BERLIN) is None
