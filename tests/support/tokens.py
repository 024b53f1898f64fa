"""Mint access tokens like the auth service does (and unlike it, on purpose, for attacks)."""

import base64
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from taskstack.common.tokens import ALGORITHM, StaticKeySet

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
