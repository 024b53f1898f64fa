"""The auth service boots against its migrated schema and serves health and docs."""

import httpx


def test_health_and_docs(client: httpx.Client) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    schema = client.get("/v1/auth/openapi.json").json()
    assert schema["info"]["title"] == "taskstack auth"
    assert client.get("/v1/auth/docs").status_code == 200
    token = schema["paths"]["/v1/auth/token"]["post"]["responses"]
    assert "application/json" in token["400"]["content"]  # the OAuth error format
    assert "/v1/auth/me" in schema["paths"]
    assert (
        schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"][
            "tokenUrl"
        ]
        == "/v1/auth/token"
    )
