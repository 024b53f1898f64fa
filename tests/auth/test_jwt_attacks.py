"""The JWT attack set against GET /v1/auth/me: every one 401, none 5xx."""

import uuid
from pathlib import Path

import httpx
import pytest

from taskstack.auth.keys import load_signing_keys
from tests.support.auth import bearer, register_id
from tests.support.tokens import TokenMint, attack_tokens


@pytest.fixture
def real_mint(keys_dir: Path) -> TokenMint:
    keys = load_signing_keys(keys_dir, None, production=False)
    return TokenMint(kid=keys.signing_kid, private_key=keys.keys[keys.signing_kid])


def test_the_attack_set_is_refused(client: httpx.Client, real_mint: TokenMint) -> None:
    subject = uuid.UUID(register_id(client, "victim@example.com"))
    control = client.get("/v1/auth/me", headers=bearer(real_mint.token(subject)))
    assert control.status_code == 200  # a well-made token for the same account works

    answers = {
        name: client.get("/v1/auth/me", headers=bearer(token)).status_code
        for name, token in attack_tokens(real_mint, subject).items()
    }
    assert {name: status for name, status in answers.items() if status != 401} == {}
    assert len(answers) == 29
