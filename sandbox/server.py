"""Running the sandbox: TLS from a throw-away CA, the settings file, the ready line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import trustme
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sandbox.app import create_app
from sandbox.context import GRAPH_RESOURCE, Sandbox
from sandbox.editions import Edition, startup_config
from sandbox.ntlm import netbios_domain

SHUTDOWN_GRACE_S = 2
KEEP_ALIVE_S = 120


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown; the sandbox exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may install signal handlers
            return

        def stop(signum: int, frame: object) -> None:
            self.force_exit = self.should_exit and signum == signal.SIGINT
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    port: int = 8443,
    directory: Path = Path(".sandbox"),
    latency_ms: int = 0,
    seed: Path | None = None,
    ready_stream: TextIO = sys.stdout,
    edition: str = Edition.SE,
) -> None:
    """Serve the sandbox until SIGTERM or SIGINT (port 0 picks a free port); ``edition`` is
    "se" (Project Server Subscription Edition) or "online" (Project Online)."""
    edition = Edition(edition)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, small responses written in two pieces wait
    # for the client's delayed ACK (~40 ms per request on Linux), which the real services do not.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    origin = f"https://127.0.0.1:{sock.getsockname()[1]}"
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    app = create_app(
        origin,
        seed,
        startup_config(edition, latency_ms),
        edition=edition,
        certificate_der=_der(certificate),
    )
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    env_file = directory / "sandbox.env"
    write_env_file(env_file, app.state.sandbox, directory / "ca.pem")
    server = _Server(_uvicorn_config(app, certificate))
    asyncio.run(
        _serve(server, sock, f"sandbox ready at {origin} (settings in {env_file})", ready_stream)
    )


def _der(certificate: trustme.LeafCert) -> bytes:
    """The served certificate's DER bytes: what Extended Protection's channel bindings hash."""
    pem = certificate.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _uvicorn_config(app: object, certificate: trustme.LeafCert) -> uvicorn.Config:
    # Idle keep-alive TLS connections would hold a graceful shutdown open until the client
    # hangs up; in-flight requests get this long to finish after SIGTERM.
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        # IIS keeps an idle connection 120 s (connectionTimeout), and Windows sign-ins live as
        # long as their connection: uvicorn's 5 s would make clients sign in again and again.
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    # uvicorn reads the key and certificate from files when it loads its config; they live
    # only for that moment.
    with tempfile.TemporaryDirectory(prefix="pwasync-sandbox-") as scratch:
        cert_file, key_file = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
        certificate.cert_chain_pems[0].write_to_path(str(cert_file))
        certificate.private_key_pem.write_to_path(str(key_file))
        config.ssl_certfile, config.ssl_keyfile = str(cert_file), str(key_file)
        config.load()
    return config


async def _serve(
    server: uvicorn.Server, sock: socket.socket, ready_line: str, ready_stream: TextIO
) -> None:
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        print(ready_line, file=ready_stream, flush=True)
    await serving


def write_env_file(path: Path, sandbox: Sandbox, ca_file: Path) -> None:
    settings = {
        **_pwa_settings(sandbox),
        **_common_settings(sandbox, ca_file),
        **_dataverse_settings(sandbox),
    }
    # No quoting: a backslash (CONTOSO\svc-pwasync) is literal in unquoted values for
    # read_env_file, python-dotenv, docker --env-file and compose.
    path.write_text(
        "".join(f"{name}={value}\n" for name, value in settings.items()), encoding="utf-8"
    )
    os.chmod(path, 0o600)  # it holds passwords and a client secret


def _pwa_settings(sandbox: Sandbox) -> dict[str, str]:
    tenant = sandbox.tenant
    service_user = tenant.user(tenant.service["pwa_user"])
    password = service_user.password if service_user else ""
    if sandbox.on_premises:  # Windows authentication as DOMAIN\user, no app registration
        local = service_user.upn.split("@")[0] if service_user else ""
        return {
            "PWASYNC_PWA_URL": sandbox.pwa_site_url,
            "PWASYNC_PWA_AUTH": "sharepoint_onprem",
            "PWASYNC_PWA_USERNAME": f"{netbios_domain(tenant)}\\{local}",
            "PWASYNC_PWA_PASSWORD": password,
            "PWASYNC_PWA_TIMEZONE": tenant.time_zone.key,
        }
    return {
        "PWASYNC_PWA_URL": sandbox.pwa_site_url,
        "PWASYNC_PWA_AUTH": "sharepoint_online",
        "PWASYNC_PWA_USERNAME": service_user.upn if service_user else "",
        "PWASYNC_PWA_PASSWORD": password,
        "PWASYNC_PWA_CLIENT_ID": tenant.service["pwa_client_id"],
        "PWASYNC_PWA_TIMEZONE": tenant.time_zone.key,
    }


def _dataverse_settings(sandbox: Sandbox) -> dict[str, str]:
    """The Planner premium environment's application user (read only when
    PWASYNC_SOURCE=dataverse)."""
    user = next(iter(sandbox.dataverse.application_users.values()))
    app = sandbox.tenant.apps[user.client_id]
    return {
        "PWASYNC_DATAVERSE_URL": sandbox.dataverse_url,
        "PWASYNC_DATAVERSE_CLIENT_ID": app.client_id,
        "PWASYNC_DATAVERSE_CLIENT_SECRET": app.secret or "",
    }


def _common_settings(sandbox: Sandbox, ca_file: Path) -> dict[str, str]:
    tenant = sandbox.tenant
    graph_app = tenant.apps[tenant.service["graph_client_id"].lower()]
    return {
        "PWASYNC_TENANT_ID": tenant.id,
        "PWASYNC_GRAPH_CLIENT_ID": graph_app.client_id,
        "PWASYNC_GRAPH_CLIENT_SECRET": graph_app.secret or "",
        "PWASYNC_AUTHORITY_HOST": sandbox.origin,
        # The product trusts only Microsoft's sign-in hosts; this file is the operator's
        # statement that the loopback one is theirs. Graph is served at the sandbox's origin
        # (the PWA's resource), and its tokens keep Microsoft Graph's audience.
        "PWASYNC_AUTHORITY_HOST_TRUSTED": "true",
        "PWASYNC_GRAPH_URL": f"{sandbox.origin}/v1.0",
        "PWASYNC_GRAPH_RESOURCE": GRAPH_RESOURCE,
        "PWASYNC_CA_BUNDLE": str(ca_file.resolve()),
        "PWASYNC_SANDBOX_URL": sandbox.origin,
    }
