"""The ``$filter`` parser on its own: precedence, literals, type checks, lambdas."""

from __future__ import annotations

from datetime import datetime

import pytest

from sandbox.odata_filter import FilterError, Schema, check, matches, parse_filter

TASK = Schema(
    "ReportingData.Task",
    {
        "TaskId": "Edm.Guid",
        "TaskName": "Edm.String",
        "TaskIndex": "Edm.Int32",
        "TaskStartDate": "Edm.DateTime",
        "TaskIsSummary": "Edm.Boolean",
    },
)
ROW = {
    "TaskId": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
    "TaskName": "O'Brien",
    "TaskIndex": 3,
    "TaskStartDate": datetime(2026, 12, 1, 8),
    "TaskIsSummary": False,
}


def evaluate(text: str, row: dict = ROW, schema: Schema = TASK) -> bool:
    expression = parse_filter(text)
    check(expression, schema)
    return matches(expression, row)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TaskId eq guid'6F9619FF-8B86-D011-B42D-00C04FC964FF'", True),
        ("TaskName eq 'O''Brien'", True),
        ("TaskName eq 'o''brien'", True),  # SQL Server's case-insensitive collation
        (
            "TaskStartDate ge datetime'2026-12-01T08:00:00' and TaskStartDate lt "
            "datetime'2026-12-01T08:00:00.001'",
            True,
        ),
        ("TaskIndex gt 2 and not TaskIsSummary", True),
        ("TaskIndex eq 1 or TaskIndex eq 3 and TaskIsSummary", False),  # and binds tighter
        ("(TaskIndex eq 1 or TaskIndex eq 3) and not TaskIsSummary", True),
        ("startswith(TaskName, 'O') and substringof('Bri', TaskName)", True),
        ("TaskStartDate eq null", False),
        ("TaskStartDate gt null", False),
    ],
)
def test_evaluation(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Expression expected at position 0."),
        ("TaskName eq 'open", "Syntax error at position 12."),
        ("TaskId eq guid'nope'", "Unrecognized 'Edm.Guid' literal"),
        (
            "TaskIndex eq '3'",
            "Operator 'eq' incompatible with operand types 'Edm.Int32' and "
            "'Edm.String' at position 10.",
        ),
        (
            "Missing eq 1",
            "No property 'Missing' exists in type 'ReportingData.Task' at position 0.",
        ),
        ("TaskIndex eq 1 TaskIndex", "Syntax error at position 15."),
        ("frobnicate(TaskName)", "Unknown function 'frobnicate'"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError) as error:
        evaluate(text)
    assert message in str(error.value)


def test_lambda_over_extended_properties() -> None:
    extended = Schema("prop", {"id": "Edm.String", "value": "Edm.String"})
    event = Schema("event", {"subject": "Edm.String"}, {"singleValueExtendedProperties": extended})
    row = {
        "subject": "x",
        "singleValueExtendedProperties": [{"id": "String {abc} Name TaskKey", "value": "k1"}],
    }
    text = (
        "singleValueExtendedProperties/any(ep: ep/id eq 'String {ABC} Name TaskKey' and "
        "ep/value eq 'k1')"
    )
    assert evaluate(text, row, event)
    assert not evaluate(text.replace("'k1'", "'k2'"), row, event)
    with pytest.raises(FilterError):
        evaluate("singleValueExtendedProperties/any(ep: ep/nope eq 'x')", row, event)
