"""Windows NTLM on the PWA endpoints, as IIS does it for Project Server on-premises.

The acceptor is pyspnego's NTLM server (the same library the product's client uses, on the
other side of the protocol): it checks the client's answer against a user file
(``NTLM_USER_FILE``, ``DOMAIN:user:password`` a line). The sandbox writes that file from the
tenant's directory before every handshake (NetBIOS domain = the first label of the tenant's
domain, upper case, e.g. ``CONTOSO``; user = the UPN's local part; UPN logons work as well), so
password changes and locks made through the control surface apply at once; a locked user is
left out, so its logon is denied as Windows would deny it.

NTLM authenticates a **connection**: negotiate → 401 with the challenge → authenticate, all on
one TCP connection, after which requests on that connection are authenticated without a header
(IIS's default). Connections are told apart by the client's address and port.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import spnego
import spnego.exceptions

from sandbox.state import Tenant

Connection = tuple[str, int]


@dataclass(frozen=True)
class NtlmStep:
    """The outcome of one leg: a challenge to send back, an authenticated UPN, or a refusal."""

    challenge: str | None = None
    upn: str | None = None
    refused: bool = False


def netbios_domain(tenant: Tenant) -> str:
    return tenant.domain.split(".")[0].upper()


class NtlmAcceptor:
    def __init__(self) -> None:
        self._file = Path(tempfile.mkdtemp(prefix="pwasync-sandbox-ntlm-")) / "users"
        os.environ["NTLM_USER_FILE"] = str(self._file)
        self._pending: dict[Connection, spnego.ContextProxy] = {}
        self._authenticated: dict[Connection, str] = {}

    def user_of(self, connection: Connection) -> str | None:
        return self._authenticated.get(connection)

    def step(self, tenant: Tenant, connection: Connection, token: str) -> NtlmStep:
        try:
            raw = base64.b64decode(token)
        except ValueError:
            return NtlmStep(refused=True)
        context = self._pending.pop(connection, None)
        self._authenticated.pop(connection, None)  # a new handshake starts over
        try:
            if context is None:
                self._write_users(tenant)
                context = spnego.server(protocol="ntlm")
                answer = context.step(raw)
                self._pending[connection] = context
                return NtlmStep(challenge=base64.b64encode(answer or b"").decode("ascii"))
            context.step(raw)
        except spnego.exceptions.SpnegoError:
            return NtlmStep(refused=True)
        upn = self._upn(tenant, str(context.client_principal or ""))
        if not context.complete or upn is None:
            return NtlmStep(refused=True)
        self._authenticated[connection] = upn
        return NtlmStep(upn=upn)

    def _write_users(self, tenant: Tenant) -> None:
        domain = netbios_domain(tenant)
        lines = []
        for user in tenant.users.values():
            if user.locked or ":" in user.password:
                continue
            local = user.upn.split("@")[0]
            lines.append(f"{domain}:{local}:{user.password}")
            lines.append(f":{user.upn}:{user.password}")
        self._file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(self._file, 0o600)

    @staticmethod
    def _upn(tenant: Tenant, principal: str) -> str | None:
        local = principal.split("\\")[-1].split("@")[0]
        user = tenant.user(f"{local}@{tenant.domain}")
        return user.upn if user else None
