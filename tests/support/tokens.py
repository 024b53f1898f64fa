"""Mint access tokens like the auth service does (and unlike it, on purpose, for attacks)."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from taskstack.common.jwks import ALGORITHM, StaticKeySet

ISSUER = "http://127.0.0.1:8000"
AUDIENCE = "taskstack"


class TokenMint:
    def __init__(
        self,
        kid: str = "test-key",
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        private_key: ec.EllipticCurvePrivateKey | None = None,
    ):
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def key_set(self) -> StaticKeySet:
        return StaticKeySet({self.kid: self.public_key})

    def jwks(self) -> dict[str, Any]:
        entry = jwt.algorithms.ECAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {"keys": [{**entry, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}

    def claims(self, subject: uuid.UUID | None = None, *, lifetime: int = 600) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(subject or uuid.uuid4()),
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
        }

    def sign_raw(self, header: dict[str, Any], payload: dict[str, Any]) -> str:
        """Sign any header, even one PyJWT would refuse to write (a numeric kid, say)."""
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
        signature = algorithm.sign(signing_input.encode(), self.private_key)
        return f"{signing_input}.{_b64(signature)}"

    def token(
        self,
        subject: uuid.UUID | None = None,
        *,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        headers: dict[str, Any] | None = None,
        key: Any = None,
        algorithm: str = ALGORITHM,
    ) -> str:
        payload = {**self.claims(subject), **(claims or {})}
        for name in drop:
            payload.pop(name, None)
        return jwt.encode(
            payload,
            key if key is not None else self.private_key,
            algorithm=algorithm,
            headers={"kid": self.kid, "typ": "at+jwt", **(headers or {})},
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def attack_tokens(real: TokenMint, subject: uuid.UUID) -> dict[str, str]:
    """The JWT attack set, aimed at ``subject``; ``real`` signs with the service's real key.

    Every one of these must be refused (401), none may cause a 5xx.
    """
    now = int(time.time())
    attacker = TokenMint(kid=real.kid, issuer=real.issuer, audience=real.audience)
    claims = real.claims(subject)
    header, payload, signature = real.token(subject).split(".")
    tampered = {**claims, "exp": now + 10**6}
    public_pem = real.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs256_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'at+jwt', 'kid': real.kid}).encode())}."
        f"{_b64(json.dumps(claims).encode())}"
    )
    hs256 = hmac.new(public_pem, hs256_input.encode(), hashlib.sha256).digest()
    attacks = {
        f"alg {alg}": (
            f"{_b64(json.dumps({'alg': alg, 'typ': 'at+jwt', 'kid': real.kid}).encode())}."
            f"{_b64(json.dumps(claims).encode())}."
        )
        for alg in ("none", "None", "NONE", "nOnE")
    }
    attacks |= {
        "hs256 with the public key": f"{hs256_input}.{_b64(hs256)}",
        "foreign key, real kid": attacker.token(subject),
        "tampered payload": f"{header}.{_b64(json.dumps(tampered).encode())}.{signature}",
        "stripped signature": f"{header}.{payload}.",
        "no signature segment": f"{header}.{payload}",
        "jku header": attacker.token(subject, headers={"jku": "http://127.0.0.1:9/jwks.json"}),
        "x5u header": attacker.token(subject, headers={"x5u": "http://127.0.0.1:9/cert.pem"}),
        "embedded jwk": attacker.token(subject, headers={"jwk": attacker.jwks()["keys"][0]}),
        "kid path traversal": real.token(subject, headers={"kid": "../../../../etc/passwd"}),
        "kid sql": real.token(subject, headers={"kid": "x' OR '1'='1"}),
        "kid 10 kB": real.token(subject, headers={"kid": "k" * 10_240}),
        "missing exp": real.token(subject, drop=("exp",)),
        "expired past leeway": real.token(subject, claims={"exp": now - 120}),
        "future nbf": real.token(subject, claims={"nbf": now + 3600}),
        "future iat": real.token(subject, claims={"iat": now + 3600}),
        "wrong aud": real.token(subject, claims={"aud": "someone-else"}),
        "missing aud": real.token(subject, drop=("aud",)),
        "wrong iss": real.token(subject, claims={"iss": "https://evil.example"}),
        "iss containing the real one": real.token(
            subject, claims={"iss": real.issuer + ".evil.example"}
        ),
        "missing iss": real.token(subject, drop=("iss",)),
        "wrong typ": real.token(subject, headers={"typ": "JWT"}),
        "unknown crit": real.token(subject, headers={"crit": ["x-ext"], "x-ext": 1}),
        "malformed": "not.a.jwt",
        "garbage": "%%%%",
        "oversized": real.token(subject, claims={"pad": "x" * 20_000}),
    }
    return attacks
