# syntax=docker/dockerfile:1
# The image of a taskstack service, auth or tasks: one Dockerfile for both,
# built from the repository root (the build context):
#
#   docker build --build-arg SERVICE=auth -t taskstack-auth:0.1.0 .
#   docker build --build-arg SERVICE=tasks -t taskstack-tasks:0.1.0 .
#
# SERVICE has no default: a build without it stops at its first command,
# naming the missing argument. UV_IMAGE and PYTHON_IMAGE are the base images;
# their defaults are pinned public images, and a machine that cannot pull
# them passes local ones instead (a Python 3.11 with python3 on PATH, and an
# image holding the uv binary at /uv). tests/deploy/dockerfile.py replays the
# build stage without a container engine (the "image closure" test).

ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG PYTHON_IMAGE=python:3.11.17-slim-trixie

FROM ${UV_IMAGE} AS uv

# ---- build: /app/.venv with the service and its runtime dependencies only
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
COPY --from=uv /uv /usr/local/bin/uv
# UVICORN_APP: the application uvicorn serves (its documented variable for
# the APP argument), inherited by the dev stage.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UVICORN_APP=taskstack.${SERVICE}.main:create_app
WORKDIR /app
# Dependencies first, in a layer that changes only with the lock. With
# --frozen, uv takes the workspace's members from the lock, so none of their
# pyproject.toml files (nor any code) is needed yet. The shell's ${SERVICE:?}
# stops a build without SERVICE here, naming it (the builders' own expansion
# of that form is too recent for some, e.g. Debian 12's buildah).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace \
        --package "taskstack-${SERVICE:?is required: --build-arg SERVICE=<a directory under services/>}"
# Then the code: the shared library and this service, installed as packages.
COPY libs/common libs/common
COPY services/${SERVICE} services/${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "taskstack-${SERVICE}"

# ---- dev: what `tilt up` runs. Editable install of the sources under /app
# (Tilt syncs changes there) and uvicorn restarting on every change.
FROM build AS dev
ARG SERVICE
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "taskstack-${SERVICE}" \
    && chown -R 10001:10001 /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_CACHE_DIR=/app/.cache/uv
USER 10001:10001
EXPOSE 8000
# The image holds one service's sources, so watching services/ watches its own.
CMD ["uvicorn", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--reload", "--reload-dir", "libs/common/src", "--reload-dir", "services"]

# ---- runtime (the default target): no uv, no sources, no shell needed.
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/taskstack/taskstack
LABEL org.opencontainers.image.title="taskstack-${SERVICE}" \
      org.opencontainers.image.description="The taskstack ${SERVICE} service" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Bytecode is compiled at build time, so nothing writes next to the code
# (the root filesystem is read-only in the cluster). uvicorn reads
# FORWARDED_ALLOW_IPS itself: the addresses (CIDRs allowed) whose
# X-Forwarded-For it trusts under --proxy-headers; the chart sets the
# ingress controller's range.
#
# uvicorn reads UVICORN_* as its options: these are SERVER_OPTIONS of
# tools/dev/src/taskstack/dev/services.py (tests/docs holds the two equal). The
# selector event loop, which keeps accepting connections while it is busy; a
# bound on open connections, answered past it with a problem+json 503; a
# backlog for a burst of connects; keep-alive above a load balancer's 60 s
# idle timeout, so the server never closes a connection the proxy reuses.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FORWARDED_ALLOW_IPS=127.0.0.1 \
    UVICORN_APP=taskstack.${SERVICE}.main:create_app \
    UVICORN_LOOP=asyncio \
    UVICORN_HTTP=taskstack.common.connections:LimitedConnections \
    UVICORN_LIMIT_CONCURRENCY=4096 \
    UVICORN_BACKLOG=2048 \
    UVICORN_TIMEOUT_KEEP_ALIVE=65
# A database URL with sslrootcert=system (what production asks for, docs/security.md):
# the OpenSSL inside psycopg's wheel looks for "the system's" CAs under its own build
# prefix (/usr/lib/psycopg-openssl), which is empty; this points it at Debian's store.
ENV SSL_CERT_DIR=/etc/ssl/certs
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
USER 10001:10001
EXPOSE 8000
# An exec-form CMD cannot expand a build argument, so the service is baked
# into UVICORN_APP above rather than into this argv; no shell or wrapper
# script stands in between. uvicorn is therefore PID 1 and gets SIGTERM
# directly: it stops accepting and lets in-flight requests finish for up to
# 20 s, within the chart's grace period (terminationGracePeriodSeconds 30 =
# preStop 5 + 20 + margin).
CMD ["uvicorn", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--timeout-graceful-shutdown", "20"]
