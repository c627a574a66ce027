"""Which assignee addresses may receive events: a syntax check and the domain allow-list.

An address comes from a PWA resource, which anyone who may edit resources can change. Before
it is used as a Graph mailbox it must be one plain Internet address (no list, no display name,
no quoting: Graph addresses users by their ASCII SMTP address or UPN), and, when
``PWASYNC_MAILBOX_DOMAINS`` is set, be in one of those domains, so a resource edited to an
outside address cannot have the organisation's plans sent there. The poller applies the policy
when it reads assignments (the run summary counts the refusals), the writer again before it
calls Graph (a message that did not come from this poller run: a replayed dead letter).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.ids import is_canonical_guid

if TYPE_CHECKING:
    from common.settings import Settings

#: RFC 5322 dot-atom local part (no quoted strings), at most 64 characters.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
#: A host name label (letters, digits, inner hyphens; IDNs in their xn-- form).
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_domain(text: str) -> bool:
    """An Internet domain of at least two labels whose last one is not all digits."""
    labels = text.split(".")
    return (
        len(text) <= 253
        and len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return (
        bool(at)
        and len(text) <= 254
        and len(local) <= 64
        and _LOCAL.fullmatch(local) is not None
        and is_domain(domain)
    )


def is_object_id(text: str) -> bool:
    """An Entra object id in its canonical form (lower-case GUID with hyphens)."""
    return is_canonical_guid(text)


@dataclass(frozen=True)
class Refusal:
    """Why an assignee gets no event: ``code`` for run summaries, ``failure_code`` for the
    writer's assignee failure record (Graph's naming, like its other codes)."""

    code: str
    failure_code: str
    reason: str


@dataclass(frozen=True)
class MailboxPolicy:
    """``domains`` empty: any well-formed address; else only those domains (each exactly)."""

    domains: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> MailboxPolicy:
        return cls(settings.mailbox_domain_set)

    def refusal(self, address: str) -> Refusal | None:
        return _refusal(self.domains, address.strip())


@functools.lru_cache(maxsize=16_384)
def _refusal(domains: frozenset[str], address: str) -> Refusal | None:
    """Remembered per address: the writer checks every assignee of every task, and a tenant
    has far fewer mailboxes than events (16,384 addresses take ~3 MB)."""
    if is_object_id(address):
        # A Planner premium user without an e-mail address, named by its Entra object id
        # (Graph's /users/{id}): a user of this tenant, but its domain cannot be checked.
        if domains:
            return Refusal(
                "mailbox_domain_not_allowed",
                "MailboxDomainNotAllowed",
                "the assignee has only an Entra object id, whose domain cannot be checked "
                "against PWASYNC_MAILBOX_DOMAINS",
            )
        return None
    if not is_address(address):
        return Refusal(
            "invalid_email_address",
            "InvalidEmailAddress",
            "the resource's e-mail address in PWA is not one valid address",
        )
    domain = address.rpartition("@")[2].lower()
    if domains and domain not in domains:
        return Refusal(
            "mailbox_domain_not_allowed",
            "MailboxDomainNotAllowed",
            f"the resource's e-mail domain {domain} is not in PWASYNC_MAILBOX_DOMAINS",
        )
    return None


ANY_MAILBOX = MailboxPolicy()
