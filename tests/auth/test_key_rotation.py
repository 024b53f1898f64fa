"""The zero-downtime rotation drill, end to end, with a verifier that is never restarted.

1. publish a new key next to the signing one; 2. sign with the new key;
3. retire the old key after the longest token lifetime.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.auth.main import create_app
from taskstack.common.jwks import RemoteKeySet
from taskstack.common.tokens import InvalidToken, TokenVerifier
from tests.support.auth import auth_settings, login, register_id
from tests.support.servers import serve


def test_rotation_drill(migrated_database: URL, database_url: URL, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    old = generate_signing_key(keys_dir)
    port: list[int] = []

    @contextmanager
    def auth(signing: str) -> Iterator[httpx.Client]:
        # Each step is a rolled-out auth deployment behind the same address.
        settings = auth_settings(migrated_database, keys_dir, auth_signing_key_id=signing)
        with serve(create_app(settings), port=port[0] if port else 0) as base_url:
            port[:] = [int(base_url.rsplit(":", 1)[1])]
            with httpx.Client(base_url=base_url) as client:
                yield client

    async def verify(verifier: TokenVerifier, token: str) -> str:
        try:
            return str((await verifier.verify(token)).subject)
        except InvalidToken as exc:
            return exc.reason

    async def drill() -> None:
        async with httpx.AsyncClient() as http:
            with auth(old) as client:
                jwks_url = f"http://127.0.0.1:{port[0]}/.well-known/jwks.json"
                keys = RemoteKeySet(jwks_url, client=http, cooldown=0.1)
                assert await keys.refresh()
                verifier = TokenVerifier(keys, issuer="http://127.0.0.1:8000", audience="taskstack")
                user = register_id(client, "ada@example.com")
                old_token = login(client, "ada@example.com").json()["access_token"]
                assert await verify(verifier, old_token) == user

            new = generate_signing_key(keys_dir)  # step 1: published, not yet signing
            with auth(old) as client:
                assert {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]} == {
                    old,
                    new,
                }
                assert await verify(verifier, old_token) == user

            with auth(new) as client:  # step 2: the new key signs
                await asyncio.sleep(0.15)
                new_token = login(client, "ada@example.com").json()["access_token"]
                assert await verify(verifier, new_token) == user
                assert await verify(verifier, old_token) == user  # still valid until retired

            (keys_dir / f"{old}.pem").unlink()  # step 3: retired
            with auth(new) as client:
                await asyncio.sleep(0.15)
                assert await keys.refresh()  # the verifier's periodic refresh
                assert await verify(verifier, old_token) == "unknown_kid"
                assert await verify(verifier, new_token) == user
                assert login(client, "ada@example.com").status_code == 200

    asyncio.run(drill())
