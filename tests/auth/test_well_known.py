"""The discovery documents: the JWKS and RFC 8414 metadata."""

from pathlib import Path

import httpx

from taskstack.auth.keys import load_signing_keys


def test_jwks_publishes_public_keys_only_and_is_cacheable(
    client: httpx.Client, keys_dir: Path
) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert key["kid"] == load_signing_keys(keys_dir, None, production=False).signing_kid


def test_authorization_server_metadata(client: httpx.Client) -> None:
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == "http://127.0.0.1:8000"
    assert metadata["token_endpoint"] == "http://127.0.0.1:8000/v1/auth/token"
    assert metadata["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert metadata["revocation_endpoint"] == "http://127.0.0.1:8000/v1/auth/revoke"
    assert metadata["grant_types_supported"] == ["password", "refresh_token"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]


def test_head_on_the_jwks_answers_its_headers_without_the_body(client: httpx.Client) -> None:
    get, head = client.get("/.well-known/jwks.json"), client.head("/.well-known/jwks.json")
    assert head.status_code == 200
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers[name] == get.headers[name]
    assert int(head.headers["content-length"]) == len(get.content) > 0
    assert head.content == b""
