"""The auth service boots against its migrated schema and serves health and docs."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from taskstack.auth.development_keys import jwk_thumbprint
from taskstack.auth.keys import load_signing_keys
from tests.support.private_keys import pem, published_private_keys


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


def test_production_refuses_a_published_development_key_under_another_kid(
    tmp_path: Path,
) -> None:
    """A key once committed to the repository, mounted as "2026-12": auth exits at start-up
    with one line naming the kid, and prints none of the key."""
    published = published_private_keys()[0]
    (tmp_path / "2026-12.pem").write_bytes(pem(published))
    environment = {
        "PATH": os.environ["PATH"],
        "ENVIRONMENT": "production",
        "TOKEN_ISSUER": "https://api.example",
        "DATABASE_URL": "postgresql://u:p@db.example/app?sslmode=verify-full&sslrootcert=system",
        "AUTH_SIGNING_KEYS_DIR": str(tmp_path),
        "AUTH_PASSWORD_PEPPER": secrets.token_urlsafe(32),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "taskstack.auth.main:create_app"]
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    thumbprint = jwk_thumbprint(published.public_key())
    assert result.stderr.strip().splitlines()[-1] == (
        f"taskstack-auth: signing key '2026-12' is a published development key (JWK thumbprint "
        f"{thumbprint}); generate a new one with `taskstack keys generate`"
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    body = pem(published).decode().splitlines()[1]
    assert body[:16] not in output
    # The refusal is production's: development loads the same file.
    assert load_signing_keys(tmp_path, None, production=False).signing_kid == "2026-12"
