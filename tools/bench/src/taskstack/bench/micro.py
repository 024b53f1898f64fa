"""Single-process measurements behind design choices, taken in every run on the same machine.

- bcrypt at the configured cost: what one sign-in costs a core.
- ES256 and EdDSA with PyJWT, same claims: why access tokens are ES256 (the
  verifier's cost is what every tasks request pays before its cache holds the
  token, and every JWT-aware gateway supports ES256).
"""

import time
import uuid

import bcrypt
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

TOKEN_ROUNDS = 2000


def bcrypt_ms(hashed: str) -> float:
    """The best of three bcrypt verifications of ``hashed``'s cost."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        bcrypt.checkpw(b"x" * 64, hashed.encode())
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def token_verify_us() -> dict[str, float]:
    """Microseconds to verify one access token, per algorithm."""
    claims = {
        "iss": "https://api.example.com",
        "aud": "taskstack",
        "sub": str(uuid.uuid4()),
        "iat": 1_700_000_000,
        "nbf": 1_700_000_000,
        "exp": 4_000_000_000,
        "jti": "x" * 22,
    }
    keys: dict[str, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey] = {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    verify = {}
    for algorithm, key in keys.items():
        token = jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt"})
        public = key.public_key()
        started = time.perf_counter()
        for _ in range(TOKEN_ROUNDS):
            jwt.decode(token, public, algorithms=[algorithm], audience="taskstack")
        verify[algorithm] = (time.perf_counter() - started) / TOKEN_ROUNDS * 1e6
    return verify
