"""The Windows logon acceptor of the PWA endpoints: NTLM, bare or inside Negotiate (SPNEGO).

The acceptor is pyspnego's (the same library the product's client uses, on the other side of
the protocol): ``spnego.server(protocol="ntlm")`` for the ``NTLM`` scheme and
``protocol="negotiate"`` for ``Negotiate``, which takes NTLM wrapped in SPNEGO and also a raw
NTLM token sent under the Negotiate scheme, as Windows clients do. There is no Kerberos KDC, so
Negotiate always settles on NTLM here. The acceptor checks the client's answer against a user
file (``NTLM_USER_FILE``, ``DOMAIN:user:password`` a line) that the sandbox writes from the
tenant's directory before every handshake (NetBIOS domain = the first label of the tenant's
domain, upper case, e.g. ``CONTOSO``; user = the UPN's local part; UPN logons work as well), so
password changes, locks and expired passwords set through the control surface apply at once:
such users are left out, so Windows denies their logon.

With Extended Protection on, the acceptor is given the TLS channel bindings of the sandbox's
certificate and pyspnego refuses an answer whose bindings are missing or differ.

A logon authenticates a **connection**: negotiate → 401 with the challenge → authenticate, all
on one TCP connection, after which requests on that connection are authenticated without a
header (IIS's default). A connection is its transport object, held weakly: a logon ends with
its connection, and a new connection that reuses a closed one's port starts unauthenticated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import spnego
from spnego.channel_bindings import GssChannelBindings

from sandbox.state import Tenant

Connection = asyncio.BaseTransport
_PROTOCOLS = {"NTLM": "ntlm", "Negotiate": "negotiate"}


@dataclass(frozen=True)
class LogonStep:
    """The outcome of one leg: a challenge to send back, an authenticated UPN (with
    Negotiate's last token for the answer, if any), or a refusal."""

    challenge: str | None = None
    upn: str | None = None
    final: str | None = None
    refused: bool = False


def netbios_domain(tenant: Tenant) -> str:
    return tenant.domain.split(".")[0].upper()


class NtlmAcceptor:
    def __init__(self) -> None:
        # Removed with the acceptor, or at the latest when the process exits.
        self._dir = tempfile.TemporaryDirectory(prefix="pwasync-sandbox-ntlm-")
        self._file = Path(self._dir.name) / "users"
        os.environ["NTLM_USER_FILE"] = str(self._file)
        self._pending: weakref.WeakKeyDictionary[Connection, tuple[str, spnego.ContextProxy]]
        self._pending = weakref.WeakKeyDictionary()
        self._authenticated: weakref.WeakKeyDictionary[Connection, str]
        self._authenticated = weakref.WeakKeyDictionary()

    def has_logons(self) -> bool:
        """Whether any connection is logged on or half-way through a handshake."""
        return bool(self._authenticated or self._pending)

    def user_of(self, connection: Connection) -> str | None:
        return self._authenticated.get(connection)

    def step(
        self,
        tenant: Tenant,
        connection: Connection,
        scheme: str,
        token: str,
        bindings: GssChannelBindings | None = None,
    ) -> LogonStep:
        """One leg of ``scheme`` ("NTLM" or "Negotiate") on a connection."""
        try:
            raw = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            return LogonStep(refused=True)
        if not raw:  # a bare scheme name is no logon (IIS answers with its offers)
            return LogonStep(refused=True)
        pending = self._pending.pop(connection, None)
        self._authenticated.pop(connection, None)  # a new handshake starts over
        if pending is None or pending[0] != scheme:
            self._write_users(tenant)
            context = spnego.server(protocol=_PROTOCOLS[scheme], channel_bindings=bindings)
        else:
            context = pending[1]
        try:
            answer = context.step(raw)
        except Exception:
            # A refused logon raises SpnegoError; a token that is no token at all raises
            # whatever pyspnego's parsers trip over (struct.error, StopIteration…). Both are a
            # 401 for the client, never a 500.
            return LogonStep(refused=True)
        encoded = base64.b64encode(answer).decode("ascii") if answer else None
        if not context.complete:
            self._pending[connection] = (scheme, context)
            return LogonStep(challenge=encoded or "")
        upn = self._upn(tenant, str(context.client_principal or ""))
        if upn is None:
            return LogonStep(refused=True)
        self._authenticated[connection] = upn
        return LogonStep(upn=upn, final=encoded)

    def _write_users(self, tenant: Tenant) -> None:
        domain = netbios_domain(tenant)
        lines = []
        for user in tenant.users.values():
            if not user.can_log_on or ":" in user.password:
                continue
            local = user.upn.split("@")[0]
            lines.append(f"{domain}:{local}:{user.password}")
            lines.append(f":{user.upn}:{user.password}")
        self._file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(self._file, 0o600)
        # pyspnego reads the file named in the environment: this acceptor's, whichever
        # acceptor of the process set it last.
        os.environ["NTLM_USER_FILE"] = str(self._file)

    @staticmethod
    def _upn(tenant: Tenant, principal: str) -> str | None:
        local = principal.split("\\")[-1].split("@")[0]
        user = tenant.user(f"{local}@{tenant.domain}")
        return user.upn if user else None
