"""Assembly of the sandbox's Starlette application from its route modules."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox import (
    control,
    entra,
    graph,
    planner_control,
    projectdata,
    projectserver,
    regional,
    server_events,
)
from sandbox.config import SandboxConfig
from sandbox.context import Sandbox
from sandbox.dataverse import routes as dataverse_routes
from sandbox.dataverse_control import routes as dataverse_control_routes
from sandbox.editions import Edition


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": f"the sandbox does not emulate {request.url.path}"}, status_code=404
    )


def create_app(
    origin: str,
    seed: Path | None = None,
    config: SandboxConfig | None = None,
    *,
    edition: Edition = Edition.ONLINE,
    certificate_der: bytes | None = None,
) -> Starlette:
    """The application for a sandbox reachable at ``origin`` (https://127.0.0.1:N) that serves
    ``certificate_der`` (for Extended Protection's channel bindings)."""
    sandbox = Sandbox(
        origin=origin,
        seed_path=seed,
        startup_config=config or SandboxConfig(),
        edition=edition,
        certificate_der=certificate_der,
    )
    site = sandbox.tenant.site_path
    # Project Server Subscription Edition has no ProjectData feed any more.
    feed = projectdata.removed_routes(site) if sandbox.on_premises else projectdata.routes(site)
    app = Starlette(
        routes=[
            *control.routes,
            *planner_control.routes,
            *server_events.control_routes,
            *graph.routes,
            *feed,
            *projectserver.routes(site),
            *server_events.routes(site),
            *regional.routes(site),
            *entra.routes,
            *dataverse_routes,
            *dataverse_control_routes,
        ],
        exception_handlers={404: _not_found},
    )
    app.state.sandbox = sandbox
    app.state.graph = graph.GraphApi(sandbox)
    return app
