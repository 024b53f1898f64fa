"""Signing keys known to be development keys, recognised by their public key, not their name.

A key whose private half was ever published (committed to the repository, printed
in documentation) can sign tokens for anyone: production must refuse it whatever
file name (kid) it is mounted under. Each is listed by its RFC 7638 JWK
thumbprint, which depends on the public key only.
"""

import base64
import hashlib
import json

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

# The keys once committed in deploy/tilt/values.yaml (kid "insecure-development") and
# deploy/helm/taskstack/ci/minimal-values.yaml (kid "dev-1"): they remain in the git
# history. The development tooling generates random keys and uses no fixed one.
PUBLISHED_DEVELOPMENT_KEYS = frozenset(
    {
        "-bIcnqTKSiGAk6hEL7wQPm1f-GtlLxZawZJTsfAKEhc",  # deploy/tilt/values.yaml
        "bmS6WDo26435qMYK1nekIAeFL3n6Kq4-VZ2LRy1_eFw",  # deploy/helm/taskstack/ci/minimal-…
    }
)


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 thumbprint (SHA-256, base64url) of an EC public key."""
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    # RFC 7638 §3.2: the required members only, sorted, no whitespace.
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
