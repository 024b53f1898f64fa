"""PEM private keys in the repository's files and in its git history.

Whatever the history holds is published: anyone with a clone has it, so the
services must treat such a key as a development key wherever it turns up.
"""

import functools
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).parents[2]
# A whole PEM block (its base64 body too), so a pattern that only names the header,
# such as the chart's values.schema.json, is not taken for a key.
PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z]+ )*)PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+?-----END \1PRIVATE KEY-----"
)


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=True
    ).stdout


def private_key_blocks(text: str) -> list[str]:
    """Every PEM private key in ``text``, each line's indentation (YAML's) removed."""
    lines = "\n".join(line.strip() for line in text.splitlines())
    return [match[0] + "\n" for match in PEM_PRIVATE_KEY.finditer(lines)]


def repository_files() -> list[Path]:
    """The files git tracks or would track (not the ones .gitignore excludes)."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@functools.cache
def published_private_keys() -> tuple[ec.EllipticCurvePrivateKey, ...]:
    """Every EC private key any commit ever added or removed."""
    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("a shallow clone does not hold the history the keys were committed in")
    history = _git("log", "--all", "--format=", "-p", "-G", "PRIVATE KEY-----")
    changed = "\n".join(
        line[1:]
        for line in history.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )
    keys: dict[bytes, ec.EllipticCurvePrivateKey] = {}
    for block in private_key_blocks(changed):
        key = serialization.load_pem_private_key(block.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys[public] = key
    return tuple(keys.values())


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
