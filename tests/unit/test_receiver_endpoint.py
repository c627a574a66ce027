"""What the receiver answers each request, decided without a server."""

from __future__ import annotations

import uuid

import pytest

from services.receiver.endpoint import CallPolicy, OurSite
from services.receiver.soap import SOAP_11

SECRET = "k3y-of-sixteen-or-more"
PROJECT = uuid.uuid4()
SITE = uuid.uuid4()


def call_body(site: uuid.UUID = SITE, wss: str = "https://farm.contoso.com/pwa/Survey") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP_11}"><s:Body><OnPublishedRemote xmlns="http://tempuri.org/">'
        f"<contextInfo><a:_siteGuid xmlns:a='urn:l'>{site}</a:_siteGuid></contextInfo>"
        f"<e><a:_projectGuid xmlns:a='urn:e'>{PROJECT}</a:_projectGuid>"
        f"<a:_wssUrl xmlns:a='urn:e'>{wss}</a:_wssUrl></e>"
        "</OnPublishedRemote></s:Body></s:Envelope>"
    ).encode()


def policy(site_id: uuid.UUID | None = SITE) -> CallPolicy:
    return CallPolicy(SECRET, OurSite("https://farm.contoso.com/pwa", lambda: site_id))


def post(path: str, body: bytes, p: CallPolicy | None = None):
    return (p or policy()).answer_post(path, {"content-type": "text/xml"}, body)


def test_a_publish_call_for_our_site_is_answered_200_with_the_soap_response():
    answer = post(f"/project-server/events/{SECRET}", call_body())
    assert answer.status == 200 and answer.refusal is None
    assert answer.call.project_id == PROJECT
    assert b"OnPublishedRemoteResponse" in answer.body
    assert answer.content_type.startswith("text/xml")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (f"/project-server/events/{SECRET}x", "secret"),
        ("/project-server/events/", "secret"),
        (f"/project-server/events/{SECRET[:-1]}", "secret"),
        (f"/other/{SECRET}", "path"),
        ("/", "path"),
    ],
)
def test_a_wrong_path_or_secret_is_404_and_names_nothing(path, reason):
    answer = post(path, call_body())
    assert answer.status == 404 and answer.call is None
    assert answer.refusal.reason == reason
    assert SECRET.encode() not in answer.body


def test_another_sites_call_is_400():
    answer = post(f"/project-server/events/{SECRET}", call_body(site=uuid.uuid4()))
    assert (answer.status, answer.refusal.reason) == (400, "site")
    other_farm = call_body(wss="https://evil.example.com/pwa/Survey")
    answer = post(f"/project-server/events/{SECRET}", other_farm)
    assert (answer.status, answer.refusal.reason) == (400, "site")


def test_the_site_guid_is_not_checked_before_register_stored_it():
    answer = post(f"/project-server/events/{SECRET}", call_body(site=uuid.uuid4()), policy(None))
    assert answer.status == 200


def test_a_body_that_is_not_soap_is_400():
    answer = post(f"/project-server/events/{SECRET}", b"<x/>")
    assert (answer.status, answer.refusal.reason) == (400, "not_soap")
    assert answer.call is None
