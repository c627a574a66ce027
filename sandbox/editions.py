"""The two PWA products the sandbox can play, and what differs between them.

* ``se``, Project Server Subscription Edition (what customers run on 2026-12-01): PWA at
  ``/pwa``, Windows authentication only (Negotiate and NTLM, Extended Protection on), no
  ProjectData feed (Microsoft removed it from PSSE), relative next links and SharePoint's
  ``X-SharePointHealthScore`` header;
* ``online``, Project Online (retired 2026-09-30): PWA at the seed's ``/sites/pwa``, bearer
  tokens from Entra ID and, as before, NTLM beside them; ProjectData and the ProjectServer API.
"""

from __future__ import annotations

from enum import StrEnum

from sandbox.config import SandboxConfig

SE_SITE_PATH = "/pwa"  # the PWA site a PSSE installation creates by default


class Edition(StrEnum):
    SE = "se"
    ONLINE = "online"


def startup_config(edition: Edition, latency_ms: int = 0) -> SandboxConfig:
    """The run-time settings a fresh sandbox of the edition starts (and resets) with."""
    on_premises = edition is Edition.SE
    return SandboxConfig(
        graph_latency_ms=latency_ms,
        pwa_latency_ms=latency_ms,
        pwa_extended_protection=on_premises,
        pwa_next_link_style="relative" if on_premises else "absolute",
    )
