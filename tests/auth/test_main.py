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


def test_openapi_says_what_the_handlers_require(client: httpx.Client) -> None:
    schema = client.get("/v1/auth/openapi.json").json()
    paths = schema["paths"]
    form = "application/x-www-form-urlencoded"
    token = paths["/v1/auth/token"]["post"]["requestBody"]["content"][form]["schema"]
    assert token["required"] == ["grant_type"]
    assert token["properties"]["grant_type"]["enum"] == ["password", "refresh_token"]
    revoke = paths["/v1/auth/revoke"]["post"]
    assert revoke["requestBody"]["content"][form]["schema"]["required"] == ["token"]
    assert "content" not in revoke["responses"]["200"]  # RFC 7009: an empty 200
    for name in ("Registration", "PasswordChange"):
        properties = schema["components"]["schemas"][name]["properties"]
        password = properties["password" if name == "Registration" else "new_password"]
        assert (password["minLength"], password["maxLength"]) == (8, 1024)
    # A body that cannot be read at all is a 400 on every operation that takes one.
    assert "400" in paths["/v1/auth/register"]["post"]["responses"]


def test_a_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    response = client.get("/v1/auth/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"
