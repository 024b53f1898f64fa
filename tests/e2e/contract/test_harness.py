"""The fuzzing harness reports what schemathesis finds: a broken API does not pass."""

from typing import Any

from fastapi import FastAPI, Query

from tests.e2e.contract.fuzzing import fuzz
from tests.support.servers import serve


def broken_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items", responses={200: {"description": "One item."}})
    async def item(limit: int = Query(ge=1, le=10)) -> dict[str, Any]:
        # Documented as {"id": int} below, but answers a string id.
        return {"id": str(limit)}

    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        content = schema["paths"]["/items"]["get"]["responses"]["200"]["content"]
        content["application/json"]["schema"] = {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}},
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def test_a_schema_violation_is_reported() -> None:
    with serve(broken_app()) as base_url:
        result = fuzz(
            f"{base_url}/openapi.json",
            {
                "seed": 1,
                "base-url": base_url,
                "generation": {"mode": "all", "max-examples": 5},
                "checks": {"enabled": True},
            },
        )
    assert result.operations == ["GET /items"]
    assert result.cases > 0
    assert any("GET /items" in failure and "schema" in failure for failure in result.failures)
