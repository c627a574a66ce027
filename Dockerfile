# pwasync: one image for every service (`pwasync poller`, `pwasync writer`, `pwasync ledger`)
# and the operator commands (`pwasync status`, `pwasync sync-now`, ...).
#
#   docker build -t pwasync:local .
#   docker run --rm --env-file .env pwasync:local check
#
# Lint: hadolint Dockerfile   (scripts/validate-compose checks compose.yaml)
#
# Base image: pinned by tag to the Python minor version and the Debian release, so a rebuild
# never moves to another Python or another libc. For releases, pin the digest as well
# (`python:3.11-slim-bookworm@sha256:...`, from `docker buildx imagetools inspect`). Both
# stages must use the same base: the virtual environment is copied from one to the other and
# its interpreter links point at /usr/local/bin/python3.11.

# --- build: a wheel of the project, installed with its runtime dependencies into /opt/venv ---
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore lets only pyproject.toml, README.md and the three packages in.
COPY . .

# `pip wheel --no-deps` builds exactly the distribution that gets installed (no editable
# install, no source tree in the final image). Installing the wheel without extras pulls the
# runtime dependencies only: the `sandbox` and `test` extras (starlette, uvicorn, pytest,
# testcontainers, ...) never reach a production image. Every dependency ships manylinux
# wheels, so no compiler is needed.
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /dist/pwasync-*.whl

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="pwasync" \
      org.opencontainers.image.description="Keeps Microsoft Project tasks in Outlook calendars"

# PYTHONUNBUFFERED: log lines reach `docker logs` at once, not when a buffer fills (or never,
# if the container is killed). PYTHONDONTWRITEBYTECODE: the venv is root-owned and read-only
# to the service user; pip already compiled the bytecode at install time.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric uid/gid, so Kubernetes `runAsNonRoot` can verify it and mounted secret files
# (PWASYNC_GRAPH_CLIENT_CERT, PWASYNC_CA_BUNDLE) can be made readable to exactly this user.
RUN groupadd --system --gid 10001 pwasync \
 && useradd --system --uid 10001 --gid pwasync --create-home --home-dir /home/pwasync \
            --shell /usr/sbin/nologin pwasync

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/pwasync

# Fail the build, not the first deployment, if the console script cannot start or the image
# has no time-zone database (PWASYNC_PWA_TIMEZONE and PWASYNC_SCHEDULE_TIMEZONE need it).
# bookworm-slim ships the full tzdata; on trixie the legacy names (US/Central, ...) moved to
# the separate tzdata-legacy package, so check both kinds of name before changing the base.
RUN pwasync --help >/dev/null \
 && python -c "import zoneinfo; zoneinfo.ZoneInfo('Europe/Berlin'); zoneinfo.ZoneInfo('US/Central')"

# Exec form: `pwasync` itself receives SIGTERM from `docker stop` / Kubernetes and drains
# in-flight work (services/runtime.py). The shell form would run it under /bin/sh, which does
# not forward the signal, so the process would be SIGKILLed after the grace period mid-message.
# compose.yaml also sets `init: true` (see there for why).
ENTRYPOINT ["pwasync"]
CMD ["--help"]
