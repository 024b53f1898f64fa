"""ES256 or EdDSA for access tokens? Sign and verify cost with PyJWT, same claims.

uv run python -m tests.bench.token_algorithms
"""

import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ROUNDS = 3000


def main() -> None:
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
    for algorithm, key in keys.items():
        started = time.perf_counter()
        for _ in range(ROUNDS):
            token = jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt"})
        sign = (time.perf_counter() - started) / ROUNDS * 1e6
        started = time.perf_counter()
        for _ in range(ROUNDS):
            jwt.decode(token, key.public_key(), algorithms=[algorithm], audience="taskstack")
        verify = (time.perf_counter() - started) / ROUNDS * 1e6
        print(f"{algorithm}: sign {sign:.0f} µs, verify {verify:.0f} µs, {len(token)} bytes")


if __name__ == "__main__":
    main()
