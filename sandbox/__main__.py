"""``python -m sandbox [--port N] [--dir DIR] [--latency-ms MS] [--seed FILE]
[--edition se|online]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sandbox.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Run the emulated Microsoft 365 tenant (Entra ID, PWA, Graph).",
    )
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".sandbox"),
        help="where ca.pem and sandbox.env are written",
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, help="latency added to every Graph and PWA request"
    )
    parser.add_argument(
        "--seed",
        type=Path,
        default=None,
        help="seed file (default: the bundled sandbox/seed/default.json)",
    )
    parser.add_argument(
        "--edition",
        choices=["se", "online"],
        default="se",
        help="se: Project Server Subscription Edition (default); online: Project Online",
    )
    args = parser.parse_args(argv)
    serve(
        port=args.port,
        directory=args.dir,
        latency_ms=args.latency_ms,
        seed=args.seed,
        edition=args.edition,
    )


if __name__ == "__main__":
    main()
