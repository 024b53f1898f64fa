"""Signing keys from a directory: what loads, what is refused, what the JWKS shows."""

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from taskstack.auth.development_keys import jwk_thumbprint
from taskstack.auth.keys import KeyConfigurationError, generate_signing_key, load_signing_keys


def write_key(directory: Path, name: str, key: object) -> None:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / name).write_bytes(pem)


def test_generated_keys_are_private_files_named_by_kid(tmp_path: Path) -> None:
    kid = generate_signing_key(tmp_path)
    path = tmp_path / f"{kid}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_signing_keys(tmp_path, None, production=True)
    assert keys.signing_kid == kid


def test_several_keys_need_the_signing_kid_and_all_are_published(tmp_path: Path) -> None:
    old, new = generate_signing_key(tmp_path), generate_signing_key(tmp_path)
    with pytest.raises(KeyConfigurationError, match="AUTH_SIGNING_KEY_ID"):
        load_signing_keys(tmp_path, None, production=False)
    keys = load_signing_keys(tmp_path, new, production=False)
    assert keys.signing_kid == new
    assert {entry["kid"] for entry in keys.jwks()["keys"]} == {old, new}
    assert all("d" not in entry for entry in keys.jwks()["keys"])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no signing keys"),
        (lambda d: (d / "k1.pem").write_text("not a key"), "cannot read"),
        (lambda d: write_key(d, "rsa.pem", rsa.generate_private_key(65537, 2048)), "EC P-256"),
        (lambda d: write_key(d, "p384.pem", ec.generate_private_key(ec.SECP384R1())), "EC P-256"),
        (lambda d: write_key(d, "bad kid!.pem", ec.generate_private_key(ec.SECP256R1())), "key id"),
    ],
)
def test_unusable_key_directories_are_refused(tmp_path: Path, setup: object, message: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(KeyConfigurationError, match=message):
        load_signing_keys(tmp_path, None, production=False)


def test_unknown_signing_kid_and_missing_directory(tmp_path: Path) -> None:
    generate_signing_key(tmp_path)
    with pytest.raises(KeyConfigurationError, match="has no key file"):
        load_signing_keys(tmp_path, "nope", production=False)
    with pytest.raises(KeyConfigurationError, match="not a directory"):
        load_signing_keys(tmp_path / "missing", None, production=False)


def test_development_keys_are_refused_in_production(tmp_path: Path) -> None:
    kid = generate_signing_key(tmp_path, development=True)
    assert kid.startswith("insecure-development-")
    assert load_signing_keys(tmp_path, None, production=False).signing_kid == kid
    with pytest.raises(KeyConfigurationError, match="development key"):
        load_signing_keys(tmp_path, None, production=True)


def test_a_known_development_key_is_refused_in_production_under_any_kid(tmp_path: Path) -> None:
    kid = generate_signing_key(tmp_path)  # a name that says nothing about development
    public = load_signing_keys(tmp_path, None, production=False).public_keys[kid]
    known = frozenset({jwk_thumbprint(public)})
    loaded = load_signing_keys(tmp_path, None, production=False, development_keys=known)
    assert loaded.signing_kid == kid  # development: any key will do
    assert load_signing_keys(tmp_path, None, production=True).signing_kid == kid  # not known
    with pytest.raises(KeyConfigurationError) as caught:
        load_signing_keys(tmp_path, None, production=True, development_keys=known)
    assert str(caught.value) == (
        f"signing key {kid!r} is a published development key (JWK thumbprint "
        f"{jwk_thumbprint(public)}); generate a new one with `taskstack keys generate`"
    )


def test_the_thumbprint_is_rfc_7638s_of_the_public_key() -> None:
    key = ec.derive_private_key(1, ec.SECP256R1())  # the curve's generator point
    numbers = key.public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    canonical = f'{{"crv":"P-256","kty":"EC","x":"{b64(numbers.x)}","y":"{b64(numbers.y)}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert jwk_thumbprint(key.public_key()) == expected.rstrip(b"=").decode()
