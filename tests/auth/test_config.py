"""The auth service's settings: defaults, and no development pepper or weak cost in production."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from taskstack.auth.config import AuthSettings
from taskstack.common.settings import describe_settings_error


def base(keys_dir: Path) -> dict[str, object]:
    return {
        "database_url": "postgres://u@h/db?sslmode=verify-full&sslrootcert=system",
        "auth_signing_keys_dir": keys_dir,
        "token_issuer": "https://taskstack.example",
    }


def test_defaults(tmp_path: Path) -> None:
    settings = AuthSettings.model_validate(base(tmp_path))
    assert settings.auth_bcrypt_cost == 12
    assert settings.auth_access_token_seconds == 600
    assert settings.auth_hash_queue_limit == 16
    assert settings.auth_hash_concurrency >= 1


def test_hash_concurrency_follows_the_pods_cpu_limit(tmp_path: Path) -> None:
    """The chart passes limits.cpu in millicores: a 1-CPU pod hashes in one thread
    however many cores its node has; an explicit setting still wins."""
    limited = AuthSettings.model_validate({**base(tmp_path), "auth_cpu_limit_millicores": 1000})
    assert limited.auth_hash_concurrency == 1
    fractional = AuthSettings.model_validate({**base(tmp_path), "auth_cpu_limit_millicores": 250})
    assert fractional.auth_hash_concurrency == 1
    explicit = AuthSettings.model_validate(
        {**base(tmp_path), "auth_cpu_limit_millicores": 1000, "auth_hash_concurrency": 3}
    )
    assert explicit.auth_hash_concurrency == 3


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_hash_concurrency_of_auth_confined_to_one_cpu_is_one(tmp_path: Path) -> None:
    """What `taskstack bench` runs auth under (taskset -c 0): one hashing thread."""
    program = (
        "import sys; from taskstack.auth.config import AuthSettings; "
        "print(AuthSettings(database_url='postgres://u@h/db', "
        "auth_signing_keys_dir=sys.argv[1]).auth_hash_concurrency)"
    )
    counted = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", program, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert counted.stdout.strip() == "1"


def test_production_refuses_the_development_pepper_and_a_weak_cost(tmp_path: Path) -> None:
    production = {**base(tmp_path), "environment": "production"}
    with pytest.raises(ValidationError) as caught:
        AuthSettings.model_validate(production)
    assert "AUTH_PASSWORD_PEPPER holds a development secret" in describe_settings_error(
        caught.value
    )
    with pytest.raises(ValidationError, match="AUTH_BCRYPT_COST"):
        AuthSettings.model_validate(
            {**production, "auth_password_pepper": "p" * 32, "auth_bcrypt_cost": 10}
        )
    ok = AuthSettings.model_validate({**production, "auth_password_pepper": "p" * 32})
    assert ok.auth_bcrypt_cost == 12
