import pytest

from common.errors import PermanentApiError, RetryableApiError
from sandbox.odata_filter import matches, parse_filter
from services.event_writer import graph_protocol as gp
from services.event_writer.graph_protocol import EventNotFound, GraphResult, MailboxUnavailable

IMMUTABLE = 'IdType="ImmutableId"'


def error(status, code, headers=None):
    return GraphResult(status, {"error": {"code": code, "message": "m"}}, headers or {})


def test_a_batch_carries_relative_urls_and_a_content_type_for_bodies():
    body = gp.batch_body(
        [gp.create("a@x.com", {"subject": "s"}), gp.delete("b+1@x.com", "AAMk/1=")]
    )
    assert body == {
        "requests": [
            {
                "id": "0",
                "method": "POST",
                "url": "/users/a@x.com/events",
                "headers": {"Prefer": IMMUTABLE, "Content-Type": "application/json"},
                "body": {"subject": "s"},
            },
            {
                "id": "1",
                "method": "DELETE",
                "url": "/users/b%2B1@x.com/events/AAMk%2F1%3D",
                "headers": {"Prefer": IMMUTABLE},
            },
        ]
    }


def test_every_request_asks_for_immutable_ids():
    """Ids of moved items stay valid only in the immutable form, and the header applies to
    the request it comes with alone."""
    mailbox = "a@x.com"
    requests = [
        gp.create(mailbox, {}),
        gp.update(mailbox, "i", {}),
        gp.delete(mailbox, "i"),
        gp.find_by_property(mailbox, "p", "v"),
    ]
    assert all(r.headers == {"Prefer": IMMUTABLE} for r in requests)


def test_batch_results_come_back_in_request_order_whatever_the_answer_order():
    payload = {
        "responses": [
            {"id": "1", "status": 429, "headers": {"Retry-After": "2.5"}, "body": {}},
            {"id": "0", "status": 201, "body": {"id": "e1"}},
        ]
    }
    first, second, missing = gp.batch_results(3, payload)
    assert (first.status, gp.created_id(first)) == (201, "e1")
    assert second.throttled and second.retry_after == 2.5
    assert missing.status == 502


def test_a_lookup_filters_on_the_documented_extended_property_shape():
    request = gp.find_by_property("a@x.com", "String {g} Name k", "it's")
    assert dict(request.params)["$filter"] == (
        "singleValueExtendedProperties/any(ep: ep/id eq 'String {g} Name k' "
        "and ep/value eq 'it''s')"
    )
    assert request.relative_url.startswith("/users/a@x.com/events?%24filter=")


def test_what_a_failed_answer_means():
    create = gp.create("a@x.com", {})
    patch = gp.update("a@x.com", "e1", {})
    assert isinstance(
        gp.error_for(create, error(404, "MailboxNotEnabledForRESTAPI")), MailboxUnavailable
    )
    assert isinstance(gp.error_for(create, error(404, "ErrorInvalidUser")), MailboxUnavailable)
    assert isinstance(gp.error_for(create, error(403, "ErrorAccessDenied")), MailboxUnavailable)
    assert isinstance(gp.error_for(patch, error(404, "ErrorItemNotFound")), EventNotFound)
    throttled = gp.error_for(create, error(429, "TooManyRequests", {"retry-after": "4"}))
    assert isinstance(throttled, RetryableApiError) and throttled.retry_after == 4
    assert isinstance(gp.error_for(create, error(400, "ErrorInvalidRequest")), PermanentApiError)
    assert isinstance(gp.error_for(create, error(500, "x")), RetryableApiError)


def test_only_a_create_without_a_clear_answer_is_uncertain():
    create = gp.create("a@x.com", {})
    assert gp.outcome_uncertain(create, RetryableApiError("timed out"))
    assert gp.outcome_uncertain(create, RetryableApiError("500", status=500))
    assert not gp.outcome_uncertain(create, RetryableApiError("429", status=429))
    assert not gp.outcome_uncertain(create, PermanentApiError("400", status=400))
    assert not gp.outcome_uncertain(gp.delete("a@x.com", "e"), RetryableApiError("timed out"))


@pytest.mark.parametrize(
    "value",
    ["it's", "O'Brien's ''quoted''", "x' or ep/value eq 'y", '<b>"Q1"</b> & ) and (', "'"],
)
def test_a_lookup_value_is_one_string_literal_whatever_it_holds(value):
    # Read back with the sandbox's OData parser: the filter matches that value and no other,
    # however many quotes, operators or parentheses it carries.
    prop = "String {g} Name k"
    expression = parse_filter(dict(gp.find_by_property("a@x.com", prop, value).params)["$filter"])

    def row(stored):
        return {"singleValueExtendedProperties": [{"id": prop, "value": stored}]}

    assert matches(expression, row(value))
    assert not matches(expression, row(value + "x")) and not matches(expression, row("y"))
