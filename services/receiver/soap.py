"""Project Server's publish call, read from a SOAP envelope whose exact form was never published.

Project Server calls a remote event receiver through WCF's stock client; the namespace, the
action and the .NET field names inside the arguments are inferred, not captured (reference,
section 8). So this reader relies only on what survives every plausible form:

- SOAP 1.1 or 1.2, told apart by the envelope's namespace (the action may sit in
  ``SOAPAction``, in the content type, in a WS-Addressing header, or nowhere);
- the operation is the first element of the Body; a name that says "published" (and not
  "publishing", the pre-event) is the call we act on;
- inside the operation, values are found by local names, namespaces ignored, matched
  case-insensitively by what they contain (``_projectGuid``, ``m_ProjectGuid``, a backing
  field ``<ProjectGuid>k__BackingField`` all contain ``projectguid``).

The answer is the empty ``<Operation>Response`` of the same SOAP version and namespace, with
WS-Addressing's Action and RelatesTo when the call carried a MessageID (a WSHttpBinding
client rejects a reply without them).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError  # noqa: S405 - types only

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

SOAP_11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_12 = "http://www.w3.org/2003/05/soap-envelope"
CONTENT_TYPES = {SOAP_11: "text/xml; charset=utf-8", SOAP_12: "application/soap+xml; charset=utf-8"}
WCF_DEFAULT_NAMESPACE = "http://tempuri.org/"
_ACTION_IN_CONTENT_TYPE = re.compile(r'action\s*=\s*"?([^";]+)"?', re.IGNORECASE)


class RefusedCall(Exception):
    """The request is not a publish call we act on; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PublishedCall:
    """What a publish call says, and what its answer must echo."""

    project_id: uuid.UUID
    soap_namespace: str
    operation: str
    operation_namespace: str
    action: str | None = None
    addressing_namespace: str | None = None
    message_id: str | None = None
    project_name: str | None = None
    job_id: str | None = None
    site_id: uuid.UUID | None = None
    wss_url: str | None = None
    handler_id: str | None = None


def parse_call(
    body: bytes, content_type: str = "", soap_action: str | None = None
) -> PublishedCall:
    """Read a publish call; raises RefusedCall when it is not SOAP or names no project."""
    envelope = _envelope(body)
    soap_namespace, envelope_name = _split(envelope.tag)
    if envelope_name != "Envelope" or soap_namespace not in CONTENT_TYPES:
        raise RefusedCall("not_soap", f"the document element is {envelope.tag!r}")
    header = _child(envelope, "Header")
    soap_body = _child(envelope, "Body")
    operation = next(iter(soap_body), None) if soap_body is not None else None
    if operation is None:
        raise RefusedCall("not_soap", "the SOAP Body is missing or empty")
    operation_namespace, operation_name = _split(operation.tag)
    if not _is_published(operation_name):
        raise RefusedCall("operation", f"operation {operation_name!r} is not a publish event")
    arguments = _argument(operation, "e")
    if arguments is None:  # a form that passes the arguments' members unwrapped
        arguments = operation
    project_id = _guid(_value(arguments, "projectguid"))
    if project_id is None:
        raise RefusedCall("no_project", f"{operation_name} names no project GUID")
    addressing_namespace, message_id, header_action = _addressing(header)
    return PublishedCall(
        project_id=project_id,
        soap_namespace=soap_namespace,
        operation=operation_name,
        operation_namespace=operation_namespace,
        action=header_action or _action(content_type, soap_action),
        addressing_namespace=addressing_namespace,
        message_id=message_id,
        project_name=_value(arguments, "projectname"),
        job_id=_value(arguments, "jobguid"),
        site_id=_guid(_value(operation, "siteguid")),
        wss_url=_value(arguments, "wssurl") or _value(operation, "wssurl"),
        handler_id=_value(operation, "eventhandleruid"),
    )


def answer(call: PublishedCall) -> tuple[bytes, str]:
    """The empty response envelope of the call's SOAP version, and its content type."""
    response_name = f"{call.operation}Response"
    header = ""
    if call.addressing_namespace and call.message_id:
        action = (call.action or call.operation) + "Response"
        header = (
            f'<s:Header><a:Action s:mustUnderstand="1">{_escape(action)}</a:Action>'
            f"<a:RelatesTo>{_escape(call.message_id)}</a:RelatesTo></s:Header>"
        )
    addressing = f' xmlns:a="{call.addressing_namespace}"' if header else ""
    namespace = f' xmlns="{call.operation_namespace}"' if call.operation_namespace else ""
    document = (
        f'<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{call.soap_namespace}"{addressing}>{header}'
        f"<s:Body><{response_name}{namespace}/></s:Body></s:Envelope>"
    )
    return document.encode("utf-8"), CONTENT_TYPES[call.soap_namespace]


# --- reading -----------------------------------------------------------------------------------


def _envelope(body: bytes) -> Element:
    try:
        # defusedxml: no DTDs, no entity expansion, no external references from a caller we
        # cannot authenticate beyond the secret in the path.
        return fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise RefusedCall(
            "not_soap", f"the body is not XML we accept ({exc.__class__.__name__})"
        ) from None


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _local(element: Element) -> str:
    return _split(element.tag)[1]


def _child(parent: Element, local_name: str) -> Element | None:
    return next((child for child in parent if _local(child) == local_name), None)


def _argument(parent: Element, local_name: str) -> Element | None:
    """The argument element named ``local_name`` (case-insensitive), one level down."""
    wanted = local_name.lower()
    return next((child for child in parent if _local(child).lower() == wanted), None)


def _is_published(operation: str) -> bool:
    name = operation.lower()
    return "published" in name and "publishing" not in name


def _value(scope: Element, fragment: str) -> str | None:
    """The text of the first descendant whose local name contains ``fragment``."""
    for element in scope.iter():
        if element is not scope and fragment in _local(element).lower():
            text = (element.text or "").strip()
            if text:
                return text
    return None


def _guid(text: str | None) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text.strip("{}"))
    except ValueError:
        return None


def _addressing(header: Element | None) -> tuple[str | None, str | None, str | None]:
    """WS-Addressing's namespace, MessageID and Action from the SOAP Header, if any."""
    if header is None:
        return None, None, None
    namespace = message_id = action = None
    for element in header:
        element_namespace, name = _split(element.tag)
        if name == "MessageID":
            namespace, message_id = element_namespace, (element.text or "").strip() or None
        elif name == "Action":
            namespace, action = element_namespace, (element.text or "").strip() or None
    return namespace, message_id, action


def _action(content_type: str, soap_action: str | None) -> str | None:
    if soap_action and soap_action.strip('" '):
        return soap_action.strip('" ')
    match = _ACTION_IN_CONTENT_TYPE.search(content_type or "")
    return match.group(1) if match else None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
