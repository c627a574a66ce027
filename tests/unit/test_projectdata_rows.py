"""Reading ProjectData rows: a malformed row becomes an UnreadableRow, never a failed run."""

import uuid
from datetime import datetime

from services.poller.projectdata import ProjectDataClient
from services.poller.source import ProjectRow, TaskRow, UnreadableRow

PROJECT, TASK = str(uuid.uuid4()), str(uuid.uuid4())


class OnePage:
    """PwaHttp's part the client uses, answering every query with one verbose page."""

    site_url = "https://contoso.sharepoint.com/sites/pwa"
    service = "Project Online"
    requests_made = 0

    def __init__(self, rows):
        self.rows = rows

    def get_json(self, url):
        return {"d": {"results": self.rows}}


def task_row(**values):
    row = {
        "ProjectId": str(PROJECT),
        "TaskId": str(TASK),
        "TaskName": "Pack",
        "TaskStartDate": "/Date(1796115600000)/",
        "TaskFinishDate": "/Date(1796144400000)/",
        "TaskIsSummary": False,
        "TaskIsProjectSummary": False,
        "Createevent": True,
    }
    return {**row, **values}


def tasks(*rows):
    return list(ProjectDataClient(OnePage(list(rows)), "Createevent").tasks(PROJECT))


def test_a_good_row_reads_as_a_task():
    [row] = tasks(task_row())
    assert isinstance(row, TaskRow) and row.start == datetime(2026, 12, 1, 9)


def test_malformed_values_make_an_unreadable_row_naming_the_property():
    rows = tasks(
        task_row(TaskStartDate="31.12.2026"),
        task_row(TaskFinishDate=12),
        task_row(TaskStartDate="/Date(99999999999999999999)/"),
        task_row(TaskId="not-a-guid", TaskName="Nameless"),
    )
    assert all(isinstance(row, UnreadableRow) for row in rows)
    assert [row.key for row in rows] == [TASK, TASK, TASK, None]
    assert "TaskStartDate is not readable: '31.12.2026'" in rows[0].problem
    assert rows[1].problem.startswith("TaskFinishDate")
    assert rows[3].name == "Nameless" and rows[3].problem.startswith("TaskId")


def test_a_project_without_a_sane_modified_date_is_unreadable():
    good = {
        "ProjectId": str(PROJECT),
        "ProjectName": "P",
        "ProjectType": 0,
        "ProjectModifiedDate": "/Date(1796115600000)/",
    }
    rows = list(
        ProjectDataClient(
            OnePage(
                [
                    good,
                    {**good, "ProjectModifiedDate": None},
                    {**good, "ProjectModifiedDate": "/Date(-62135596800000)/"},  # year 1
                    {**good, "ProjectType": "master"},
                ]
            ),
            "Createevent",
        ).projects()
    )
    assert isinstance(rows[0], ProjectRow)
    assert [type(row) for row in rows[1:]] == [UnreadableRow] * 3
    assert rows[2].problem.startswith("ProjectModifiedDate")
