"""/livez (the process answers) and /readyz (the service can do its work right now)."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from starlette.responses import Response

from taskstack.common.errors import problem_response
from taskstack.common.metrics import READY

# A readiness check answers True when its dependency is usable; it must return
# within the readiness timeout (a check that times out counts as not ready).
ReadinessCheck = Callable[[], Awaitable[bool]]


def health_router(service: str, checks: Mapping[str, ReadinessCheck], timeout: float) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    gauges = {name: READY.labels(service, name) for name in checks}

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        # Never touches the database: an outage must not make the kubelet restart pods.
        return {"status": "ok"}

    @router.get("/readyz", response_model=None)
    async def readyz() -> dict[str, object] | Response:
        results = await asyncio.gather(*(_run(check, seconds=timeout) for check in checks.values()))
        status = dict(zip(checks, results, strict=True))
        for name, ok in status.items():
            gauges[name].set(1 if ok else 0)
        failing = sorted(name for name, ok in status.items() if not ok)
        if failing:
            return problem_response(503, f"Not ready: {', '.join(failing)}.")
        return {"status": "ready", "checks": dict.fromkeys(status, "ok")}

    return router


async def _run(check: ReadinessCheck, *, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return await check()
    except TimeoutError:
        return False
