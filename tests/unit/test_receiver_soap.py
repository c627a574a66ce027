"""The publish call's reader on every plausible wire form (reference, section 8)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from defusedxml.ElementTree import fromstring

from sandbox.server_events import published_call
from services.receiver.soap import SOAP_11, SOAP_12, RefusedCall, answer, parse_call

PROJECT = uuid.UUID("6b3a2f0c-1d2e-4f50-9a8b-7c6d5e4f3a21")
SITE = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")


def envelope(soap: str, operation: str, inner: str, header: str = "", ns: str = "") -> bytes:
    ns_attr = f' xmlns="{ns}"' if ns else ""
    return (
        f'<s:Envelope xmlns:s="{soap}">{header}<s:Body>'
        f"<{operation}{ns_attr}>{inner}</{operation}></s:Body></s:Envelope>"
    ).encode()


def event_args(field: str, value: str = str(PROJECT)) -> str:
    return (
        f'<e xmlns:a="urn:x"><a:{field}>{value}</a:{field}>'
        "<a:_projectName>Site survey</a:_projectName></e>"
    )


def test_the_sandbox_form_soap_11_with_backing_fields_is_read_whole():
    project = SimpleNamespace(
        id=str(PROJECT), published=SimpleNamespace(name="Office move & fit-out"), draft=None
    )
    sandbox = SimpleNamespace(pwa_site_url="https://pwa.contoso.com/pwa")
    call = parse_call(
        published_call(sandbox, project, "3c1e0c7a-0000-4000-8000-000000000001"),
        "text/xml; charset=utf-8",
        '"http://tempuri.org/IProjectEventReceiverRemote/OnPublishedRemote"',
    )
    assert call.project_id == PROJECT
    assert call.project_name == "Office move & fit-out"
    assert call.soap_namespace == SOAP_11 and call.operation == "OnPublishedRemote"
    assert call.action == "http://tempuri.org/IProjectEventReceiverRemote/OnPublishedRemote"
    assert call.wss_url.startswith("https://pwa.contoso.com/pwa/")
    assert call.site_id is not None and call.handler_id.startswith("3c1e0c7a")


@pytest.mark.parametrize(
    "field",
    [
        "_projectGuid",
        "m_ProjectGuid",
        "ProjectGuid",
        "projectGUID",
        "_x003C_ProjectGuid_x003E_k__BackingField",
    ],
)
def test_the_project_guid_is_found_by_any_dotnet_field_name(field):
    body = envelope(SOAP_11, "OnPublishedRemote", event_args(field), ns="http://tempuri.org/")
    assert parse_call(body).project_id == PROJECT


def test_braced_guids_are_read_and_an_envelope_outside_soap_is_not():
    body = (
        f"<Envelope><Body><OnPublishedRemote><e><ProjectGuid>{{{PROJECT}}}</ProjectGuid></e>"
        "</OnPublishedRemote></Body></Envelope>"
    ).encode()
    with pytest.raises(RefusedCall) as refused:  # an envelope outside SOAP's namespaces
        parse_call(body)
    assert refused.value.reason == "not_soap"
    body = envelope(
        SOAP_11, "OnPublishedRemote", f"<e><ProjectGuid>{{{PROJECT}}}</ProjectGuid></e>"
    )
    assert parse_call(body).project_id == PROJECT


def test_soap_12_with_the_action_in_the_content_type_and_ws_addressing():
    addressing = "http://www.w3.org/2005/08/addressing"
    header = (
        f'<s:Header><a:Action xmlns:a="{addressing}" s:mustUnderstand="1">'
        "http://tempuri.org/IProjectEventReceiverRemote/OnPublishedRemote</a:Action>"
        f'<a:MessageID xmlns:a="{addressing}">urn:uuid:7d1c</a:MessageID></s:Header>'
    )
    body = envelope(
        SOAP_12, "OnPublishedRemote", event_args("ProjectGuid"), header, "http://tempuri.org/"
    )
    content_type = 'application/soap+xml; charset=utf-8; action="http://tempuri.org/x"'
    call = parse_call(body, content_type)
    assert call.soap_namespace == SOAP_12 and call.message_id == "urn:uuid:7d1c"
    document, reply_type = answer(call)
    assert reply_type.startswith("application/soap+xml")
    reply = fromstring(document)
    assert reply.tag == f"{{{SOAP_12}}}Envelope"
    relates = reply.find(f".//{{{addressing}}}RelatesTo")
    action = reply.find(f".//{{{addressing}}}Action")
    assert relates is not None and relates.text == "urn:uuid:7d1c"
    assert action.text.endswith("OnPublishedRemoteResponse")
    assert reply.find(".//{http://tempuri.org/}OnPublishedRemoteResponse") is not None


def test_soap_11_answer_is_the_empty_response_in_the_operation_namespace():
    body = envelope(SOAP_11, "OnPublishedRemote", event_args("_projectGuid"), ns="urn:custom")
    document, content_type = answer(parse_call(body, soap_action='"urn:custom/OnPublishedRemote"'))
    assert content_type.startswith("text/xml")
    reply = fromstring(document)
    response = reply.find(f"{{{SOAP_11}}}Body/{{urn:custom}}OnPublishedRemoteResponse")
    assert response is not None and len(response) == 0
    assert reply.find(f"{{{SOAP_11}}}Header") is None  # no addressing asked, none given


def test_unwrapped_arguments_are_read_too():
    body = envelope(SOAP_11, "OnPublished", f"<projectGuid>{PROJECT}</projectGuid>")
    assert parse_call(body).project_id == PROJECT


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not_soap"),
        (b"project published!", "not_soap"),
        (b'{"ProjectGuid": "x"}', "not_soap"),
        (b"<html><body>hi</body></html>", "not_soap"),
        (envelope(SOAP_11, "OnPublishingRemote", event_args("ProjectGuid")), "operation"),
        (envelope(SOAP_11, "OnDeletedRemote", event_args("ProjectGuid")), "operation"),
        (
            envelope(SOAP_11, "OnPublishedRemote", event_args("ProjectGuid", "not-a-guid")),
            "no_project",
        ),
        (envelope(SOAP_11, "OnPublishedRemote", "<e/>"), "no_project"),
        (f'<s:Envelope xmlns:s="{SOAP_11}"><s:Body/></s:Envelope>'.encode(), "not_soap"),
    ],
)
def test_what_is_not_a_publish_call_is_refused_with_its_reason(body, reason):
    with pytest.raises(RefusedCall) as refused:
        parse_call(body)
    assert refused.value.reason == reason


def test_entity_expansion_and_dtds_are_refused():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b"<OnPublishedRemote><e><ProjectGuid>&lol2;</ProjectGuid></e></OnPublishedRemote>"
        b"</s:Body></s:Envelope>"
    )
    with pytest.raises(RefusedCall) as refused:
        parse_call(bomb)
    assert refused.value.reason == "not_soap"
