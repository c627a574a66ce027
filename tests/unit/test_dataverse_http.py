"""Reading a Dataverse collection: next links as given, the same Prefer on every page, the
delta link of the last page, and a server that never ends its paging."""

from __future__ import annotations

import pytest

from common.errors import PermanentApiError
from services.poller.dataverse_auth import read_collection


class FakeHttp:
    page_size = 2
    service = "Dataverse"

    def __init__(self, pages: dict[str, dict]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, str | None]] = []

    def get_json(self, url: str, *, prefer: str | None = None) -> dict:
        self.calls.append((url, prefer))
        return self.pages[url]


def test_pages_are_followed_with_the_same_preference_and_the_delta_link_kept():
    http = FakeHttp(
        {
            "u1": {"value": [{"a": 1}, {"a": 2}], "@odata.nextLink": "u2"},
            "u2": {"value": [{"a": 3}], "@odata.deltaLink": "d1"},
        }
    )
    read = read_collection(http, "u1", track=True)
    assert [r["a"] for r in read.rows] == [1, 2, 3] and read.delta_link == "d1"
    assert {prefer for _, prefer in http.calls} == {"odata.track-changes,odata.maxpagesize=2"}
    assert read_collection(FakeHttp({"u": {"value": []}}), "u").delta_link is None


def test_a_next_link_seen_twice_or_a_page_without_value_is_an_error():
    with pytest.raises(PermanentApiError, match="paging does not end"):
        read_collection(FakeHttp({"u": {"value": [], "@odata.nextLink": "u"}}), "u")
    with pytest.raises(PermanentApiError, match="without 'value'"):
        read_collection(FakeHttp({"u": {"error": {}}}), "u")


def test_a_relative_link_is_taken_against_the_page():
    http = FakeHttp(
        {
            "https://env/api/data/v9.2/t?$select=a": {"value": [], "@odata.nextLink": "t?page=2"},
            "https://env/api/data/v9.2/t?page=2": {
                "value": [{"a": 1}],
                "@odata.deltaLink": "t?d=1",
            },
        }
    )
    read = read_collection(http, "https://env/api/data/v9.2/t?$select=a", track=True)
    assert read.rows == [{"a": 1}] and read.delta_link == "https://env/api/data/v9.2/t?d=1"
