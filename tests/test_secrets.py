"""No private key in the repository; every key its history ever held is refused in production."""

from taskstack.auth.development_keys import PUBLISHED_DEVELOPMENT_KEYS, jwk_thumbprint
from tests.support.private_keys import private_key_blocks, published_private_keys, repository_files


def test_no_private_key_is_committed() -> None:
    files = repository_files()
    assert any(path.name == "values.yaml" for path in files)
    holding = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary: not a PEM file
        if private_key_blocks(text):
            holding.append(str(path))
    assert holding == []


def test_every_key_the_history_published_is_a_known_development_key() -> None:
    published = published_private_keys()
    assert len(published) >= 2  # the Tilt and CI keys, committed before they were removed
    thumbprints = {jwk_thumbprint(key.public_key()) for key in published}
    assert thumbprints <= PUBLISHED_DEVELOPMENT_KEYS
