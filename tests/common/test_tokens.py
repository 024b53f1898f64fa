"""Access-token verification: the happy path, the JWT attack set, and the cached JWKS."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from taskstack.common.jwks import RemoteKeySet, public_keys_from_jwks
from taskstack.common.tokens import InvalidToken, TokenVerifier
from tests.support.tokens import AUDIENCE, ISSUER, TokenMint

LEEWAY = 30


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def verifier(mint: TokenMint) -> TokenVerifier:
    return TokenVerifier(mint.key_set(), issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        asyncio.run(verifier.verify(token))
    return caught.value.reason


def test_a_good_token_verifies(mint: TokenMint, verifier: TokenVerifier) -> None:
    subject = uuid.uuid4()
    token = asyncio.run(verifier.verify(mint.token(subject)))
    assert token.subject == subject
    assert token.expires_at > time.time()


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_casing(mint: TokenMint, verifier: TokenVerifier, alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": mint.kid}
    assert refused(verifier, segments(header, mint.claims()) + ".") == "algorithm"


def test_hs256_signed_with_the_public_key(mint: TokenMint, verifier: TokenVerifier) -> None:
    public_pem = mint.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = segments({"alg": "HS256", "typ": "at+jwt", "kid": mint.kid}, mint.claims())
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert refused(verifier, f"{signing_input}.{b64(signature)}") == "algorithm"


def test_a_foreign_key_reusing_a_real_kid(mint: TokenMint, verifier: TokenVerifier) -> None:
    forged = mint.token(key=ec.generate_private_key(ec.SECP256R1()))
    assert refused(verifier, forged) == "signature"


def test_tampered_payload(mint: TokenMint, verifier: TokenVerifier) -> None:
    header, _, signature = mint.token().split(".")
    other = b64(json.dumps(mint.claims(uuid.uuid4())).encode())
    assert refused(verifier, f"{header}.{other}.{signature}") == "signature"


def test_stripped_signature(mint: TokenMint, verifier: TokenVerifier) -> None:
    header, payload, _ = mint.token().split(".")
    assert refused(verifier, f"{header}.{payload}.") in {"signature", "malformed"}
    assert refused(verifier, f"{header}.{payload}") == "malformed"


@pytest.mark.parametrize("kid", ["../../etc/passwd", "' OR 1=1 --", "k" * 10_000, "", "é", 7, None])
def test_hostile_kids(mint: TokenMint, verifier: TokenVerifier, kid: object) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    assert refused(verifier, mint.sign_raw(header, mint.claims())) in {"kid", "malformed"}


def test_unknown_kid(mint: TokenMint, verifier: TokenVerifier) -> None:
    assert refused(verifier, mint.token(headers={"kid": "another-key"})) == "unknown_kid"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"])
def test_every_claim_is_required(mint: TokenMint, verifier: TokenVerifier, claim: str) -> None:
    assert refused(verifier, mint.token(drop=(claim,))) == "claims"


def test_expiry_honours_the_leeway_on_both_sides(mint: TokenMint, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert refused(verifier, mint.token(claims={"exp": now - LEEWAY - 5})) == "expired"
    asyncio.run(verifier.verify(mint.token(claims={"exp": now - LEEWAY + 5})))


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_and_iat_honour_the_leeway(
    mint: TokenMint, verifier: TokenVerifier, claim: str
) -> None:
    now = int(time.time())
    assert refused(verifier, mint.token(claims={claim: now + LEEWAY + 5})) == "not_yet_valid"
    asyncio.run(verifier.verify(mint.token(claims={claim: now + LEEWAY - 5})))


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"aud": [AUDIENCE, "someone-else"]},
        {"aud": ""},
        {"iss": "https://evil.example"},
        {"iss": ISSUER + ".evil.example"},
        {"iss": "x" + ISSUER},
        {"iss": ISSUER + "/"},
        {"sub": "not-a-uuid"},
        {"sub": 42},
        {"exp": "tomorrow"},
        {"jti": 5},
    ],
)
def test_wrong_claims(mint: TokenMint, verifier: TokenVerifier, claims: dict[str, Any]) -> None:
    assert refused(verifier, mint.token(claims=claims)) == "claims"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT-not", ""])
def test_wrong_typ(mint: TokenMint, verifier: TokenVerifier, typ: str) -> None:
    assert refused(verifier, mint.token(headers={"typ": typ})) == "type"


def test_application_at_jwt_typ_is_accepted(mint: TokenMint, verifier: TokenVerifier) -> None:
    asyncio.run(verifier.verify(mint.token(headers={"typ": "application/at+jwt"})))


def test_unknown_crit(mint: TokenMint, verifier: TokenVerifier) -> None:
    token = mint.token(headers={"crit": ["taskstack-ext"], "taskstack-ext": True})
    assert refused(verifier, token) in {"header", "malformed"}  # PyJWT itself refuses it too


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "....", "é.é.é", "eyJ" + "A" * 10_000, "Bearer x.y.z"]
)
def test_malformed_and_oversized(verifier: TokenVerifier, token: str) -> None:
    assert refused(verifier, token) == "malformed"


def jwks_client(
    mint: TokenMint, log: list[str], fail: Callable[[], bool] = lambda: False
) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(str(request.url))
        if fail():
            return httpx.Response(503)
        return httpx.Response(200, json=mint.jwks())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


JWKS_URL = "http://auth.internal/.well-known/jwks.json"


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_key_pointing_headers_are_refused_and_never_followed(mint: TokenMint, header: str) -> None:
    attacker = TokenMint(kid=mint.kid)
    pointer: object = {
        "jku": "http://attacker.example/jwks.json",
        "x5u": "http://attacker.example/cert.pem",
        "jwk": attacker.jwks()["keys"][0],
        "x5c": ["MIIB"],
    }[header]
    requests: list[str] = []

    async def check() -> str:
        async with jwks_client(mint, requests) as client:
            keys = RemoteKeySet(JWKS_URL, client=client)
            await keys.refresh()
            verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
            with pytest.raises(InvalidToken) as caught:
                await verifier.verify(attacker.token(headers={header: pointer}))
            return caught.value.reason

    assert asyncio.run(check()) == "header"
    assert requests == [JWKS_URL]


def test_remote_keys_refetch_an_unknown_kid_at_most_once_per_cooldown(mint: TokenMint) -> None:
    requests: list[str] = []

    async def flood() -> None:
        async with jwks_client(mint, requests) as client:
            keys = RemoteKeySet(JWKS_URL, client=client, cooldown=60)
            await keys.refresh()
            verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
            for _ in range(200):
                with pytest.raises(InvalidToken):
                    await verifier.verify(mint.token(headers={"kid": uuid.uuid4().hex}))
            await verifier.verify(mint.token())

    asyncio.run(flood())
    assert len(requests) == 1


def test_remote_keys_pick_up_a_new_kid_after_the_cooldown(mint: TokenMint) -> None:
    requests: list[str] = []
    rotated = TokenMint(kid="next-key")

    async def rotate() -> None:
        current = [mint]

        def handler(request: httpx.Request) -> httpx.Response:
            requests.append(str(request.url))
            return httpx.Response(
                200, json={"keys": [k for m in current for k in m.jwks()["keys"]]}
            )

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            keys = RemoteKeySet(JWKS_URL, client=client, cooldown=0.2)
            await keys.refresh()
            verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
            current.append(rotated)  # auth publishes a new key
            await asyncio.sleep(0.25)
            await verifier.verify(rotated.token())

    asyncio.run(rotate())
    assert len(requests) == 2


def test_a_failed_refresh_keeps_the_last_good_keys(mint: TokenMint) -> None:
    requests: list[str] = []
    down = {"now": False}

    async def outage() -> None:
        async with jwks_client(mint, requests, fail=lambda: down["now"]) as client:
            keys = RemoteKeySet(JWKS_URL, client=client, cooldown=0)
            assert await keys.refresh()
            down["now"] = True
            assert not await keys.refresh()
            assert keys.loaded
            verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
            await verifier.verify(mint.token())

    asyncio.run(outage())
    assert len(requests) == 2


def test_a_jwks_with_a_private_key_is_refused(mint: TokenMint) -> None:
    entry = mint.jwks()["keys"][0]
    with pytest.raises(ValueError, match="private"):
        public_keys_from_jwks({"keys": [{**entry, "d": "secret"}]})


def test_jwks_entries_for_other_algorithms_are_ignored(mint: TokenMint) -> None:
    entry = mint.jwks()["keys"][0]
    document = {
        "keys": [
            entry,
            {**entry, "kid": "rsa", "kty": "RSA"},
            {**entry, "kid": "hs", "alg": "HS256"},
        ]
    }
    assert set(public_keys_from_jwks(document)) == {mint.kid}


def test_a_verified_token_is_checked_once_then_refused_once_expired(
    mint: TokenMint, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(mint.key_set(), issuer=ISSUER, audience=AUDIENCE, leeway=0)
    decoded = 0
    decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    expires = int(time.time()) + 2
    token = mint.token(claims={"exp": expires})
    for _ in range(5):
        asyncio.run(verifier.verify(token))
    assert decoded == 1
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    assert refused(verifier, token) == "expired"


def test_the_cache_keys_on_the_whole_token(mint: TokenMint, verifier: TokenVerifier) -> None:
    token = mint.token()
    asyncio.run(verifier.verify(token))
    header, payload, _ = token.split(".")
    forged = TokenMint(kid=mint.kid).token().split(".")[2]
    assert refused(verifier, f"{header}.{payload}.{forged}") == "signature"


def test_a_cached_token_of_a_retired_key_is_refused(mint: TokenMint) -> None:
    keys = mint.key_set()
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
    token = mint.token()
    asyncio.run(verifier.verify(token))
    keys.keys.clear()
    assert refused(verifier, token) == "unknown_kid"


def test_the_token_cache_is_bounded(mint: TokenMint) -> None:
    verifier = TokenVerifier(mint.key_set(), issuer=ISSUER, audience=AUDIENCE, cache_size=3)
    for _ in range(10):
        asyncio.run(verifier.verify(mint.token()))
    assert verifier._verified is not None and len(verifier._verified) == 3
