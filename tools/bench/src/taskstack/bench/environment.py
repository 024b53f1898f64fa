"""What the services run with, and what the report says about the machine and the run."""

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from taskstack.bench.database import libpq

ISSUER = "http://taskstack-bench.invalid"
AUDIENCE = "taskstack"
PEPPER = "insecure-development-bench-pepper"
CURSOR_SECRET = "insecure-development-bench-cursor-secret"
LOG_LEVEL = "WARNING"


def service_env(bcrypt_cost: int, keys: Path) -> dict[str, str]:
    # Nothing inherited that would change what is measured: no OTLP exporter, no
    # database or service settings from the caller's shell.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "DATABASE_", "AUTH_", "TASKS_", "TOKEN_", "JWKS_"))
    }
    return {
        **inherited,
        "ENVIRONMENT": "development",
        "LOG_LEVEL": LOG_LEVEL,
        "ACCESS_LOG": "false",
        "AUTH_SIGNING_KEYS_DIR": str(keys),
        "AUTH_PASSWORD_PEPPER": PEPPER,
        "AUTH_BCRYPT_COST": str(bcrypt_cost),
        "TOKEN_ISSUER": ISSUER,
        "TOKEN_AUDIENCE": AUDIENCE,
        "TASKS_CURSOR_SECRET": CURSOR_SECRET,
        # The load sends each seeded user's requests far faster than any person would,
        # and the busiest users hold more tasks than the default quota: the per-user
        # limits would measure refusals, not the service.
        "TASKS_RATE_LIMIT_PER_MINUTE": str(2**31 - 1),
        "TASKS_MAX_TASKS_PER_USER": str(2**31 - 1),
    }


def server_version(url: URL) -> str:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def run_context(settings: dict[str, Any]) -> dict[str, Any]:
    """The date, the machine, and the run's ``settings`` with the services' own."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            # Other work on the machine shares the CPUs the servers are pinned to.
            "load_average_start": round(os.getloadavg()[0], 2),
        },
        "settings": {
            **settings,
            "log_level": LOG_LEVEL,
            "access_log": False,
            "tracing": "off (no OTEL_* exporter)",
            "server_cpu": "0 (one uvicorn worker each)",
            "load_cpu": "1 (wrk, one thread)",
        },
    }
