"""Signing keys: loaded from a directory of PEM files, published as a JWKS, one of them signing.

Zero-downtime rotation (docs/api/auth.md, "Key rotation"): add a new key file (it is
published while the old one still signs) → once every verifier has fetched
the new JWKS, make it the signing key (AUTH_SIGNING_KEY_ID) → after the
longest access-token lifetime has passed, delete the old file.
"""

import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from taskstack.auth.development_keys import PUBLISHED_DEVELOPMENT_KEYS, jwk_thumbprint
from taskstack.common.jwks import ALGORITHM
from taskstack.common.settings import DEVELOPMENT_SECRET_MARKER

KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
ACCESS_TOKEN_TYPE = "at+jwt"


class KeyConfigurationError(RuntimeError):
    """The signing keys cannot be used as configured; the service must not start."""


@dataclass(frozen=True)
class SigningKeys:
    keys: dict[str, ec.EllipticCurvePrivateKey]
    signing_kid: str

    @property
    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        return {kid: key.public_key() for kid, key in self.keys.items()}

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWKS: every loaded key, never a private field."""
        entries = []
        for kid, key in sorted(self.public_keys.items()):
            public = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
            entries.append(
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": public["x"],
                    "y": public["y"],
                    "kid": kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                }
            )
        return {"keys": entries}

    def issue_access_token(
        self,
        subject: uuid.UUID,
        *,
        issuer: str,
        audience: str,
        lifetime: int,
        email_verified: bool = False,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": str(subject),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "email_verified": email_verified,
        }
        return jwt.encode(
            claims,
            self.keys[self.signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self.signing_kid, "typ": ACCESS_TOKEN_TYPE},
        )


def load_signing_keys(
    directory: Path,
    signing_kid: str | None,
    *,
    production: bool,
    development_keys: frozenset[str] = PUBLISHED_DEVELOPMENT_KEYS,
) -> SigningKeys:
    """Read every ``<kid>.pem`` in ``directory``; refuse anything unusable, with one clear line.

    In production a key is refused when its kid carries the development marker or
    its public key's thumbprint is one of ``development_keys``.
    """
    if not directory.is_dir():
        raise KeyConfigurationError(f"AUTH_SIGNING_KEYS_DIR {directory} is not a directory")
    keys: dict[str, ec.EllipticCurvePrivateKey] = {}
    for path in sorted(directory.glob("*.pem")):
        kid = path.stem
        if not KEY_ID.fullmatch(kid):
            raise KeyConfigurationError(f"key file name {path.name!r} is not a valid key id")
        if production and DEVELOPMENT_SECRET_MARKER in kid:
            raise KeyConfigurationError(f"key {kid!r} is a development key; refusing to start")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise KeyConfigurationError(f"cannot read signing key {path.name}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeyConfigurationError(f"signing key {path.name} is not an EC P-256 key")
        if production and (thumbprint := jwk_thumbprint(key.public_key())) in development_keys:
            raise KeyConfigurationError(
                f"signing key {kid!r} is a published development key (JWK thumbprint "
                f"{thumbprint}); generate a new one with `taskstack keys generate`"
            )
        keys[kid] = key
    if not keys:
        raise KeyConfigurationError(f"no signing keys (*.pem) in {directory}")
    if signing_kid is None:
        if len(keys) > 1:
            raise KeyConfigurationError(
                "several signing keys are loaded: set AUTH_SIGNING_KEY_ID to the one that signs"
            )
        signing_kid = next(iter(keys))
    if signing_kid not in keys:
        raise KeyConfigurationError(f"AUTH_SIGNING_KEY_ID {signing_kid!r} has no key file")
    return SigningKeys(keys=keys, signing_kid=signing_kid)


def generate_signing_key(directory: Path, *, development: bool = False) -> str:
    """Write a new P-256 private key as ``<kid>.pem`` (mode 0600) and return its kid."""
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    prefix = f"{DEVELOPMENT_SECRET_MARKER}-" if development else ""
    kid = f"{prefix}{stamp}-{secrets.token_hex(4)}"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return kid
