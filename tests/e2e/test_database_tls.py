"""TLS to PostgreSQL: production verifies the server's certificate, or refuses to start.

A private PostgreSQL with ssl=on serves a certificate for 127.0.0.1 and localhost,
issued by a certificate authority made for this test. The server also accepts
plaintext, so each refusal below is taskstack's own, not the server's.
"""

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.auth.main import create_app
from tests.e2e.cluster import PrivateCluster, hand_over, system_postgres_bin
from tests.support.auth import STRONG_PASSWORD, auth_settings
from tests.support.certificates import CertificateAuthority
from tests.support.servers import serve

MIGRATE = str(Path(sys.executable).with_name("taskstack-auth-migrate"))
# Sent in every URL below (the test server trusts loopback and never asks for it): it
# must never appear in an error.
PASSWORD = "Tls-Test-" + secrets.token_hex(8)
PRODUCTION = {"ENVIRONMENT": "production", "TOKEN_ISSUER": "https://api.example"}


class TlsCluster:
    def __init__(self, cluster: PrivateCluster, ca_file: Path, wrong_ca_file: Path) -> None:
        self.cluster = cluster
        self.ca_file = ca_file
        self.wrong_ca_file = wrong_ca_file

    def url(self, database: URL, **options: str) -> str:
        """A libpq URL of ``database`` over TCP, with a password and these query options."""
        url = database.set(drivername="postgresql", password=PASSWORD).update_query_dict(options)
        return url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsCluster]:
    # Not pytest's tmp_path: the server's own user must be able to reach its directory.
    with tempfile.TemporaryDirectory(prefix="taskstack-tls-pg-") as name:
        yield from _tls_cluster(Path(name))


def _tls_cluster(directory: Path) -> Iterator[TlsCluster]:
    ca = CertificateAuthority.create("taskstack test database CA")
    other_ca = CertificateAuthority.create("some other CA")
    cluster = PrivateCluster(directory, bin_dir=system_postgres_bin())
    cluster.init()
    ca.issue_server(
        ["127.0.0.1", "localhost"], cluster.data / "server.crt", cluster.data / "server.key"
    )
    (cluster.data / "server.key").chmod(0o600)  # PostgreSQL refuses a key others can read
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    hand_over(cluster.data)
    cluster.start()
    try:
        yield TlsCluster(
            cluster, ca.write(directory / "ca.pem"), other_ca.write(directory / "other-ca.pem")
        )
    finally:
        cluster.stop("immediate")


def migrate(url: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MIGRATE],
        env={"PATH": os.environ["PATH"], "DATABASE_URL": url, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_migrates_and_serves_over_verified_tls(tls: TlsCluster, tmp_path: Path) -> None:
    database = tls.cluster.create_database("taskstack_tls")
    verified = tls.url(database, sslmode="verify-full", sslrootcert=str(tls.ca_file))

    migrated = migrate(verified, **PRODUCTION)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "taskstack-auth-migrate: schema 'auth' is at head"

    keys_dir = tmp_path / "keys"
    generate_signing_key(keys_dir)
    settings = auth_settings(
        URL.create("postgresql"),
        keys_dir,
        database_url=verified,
        environment="production",
        token_issuer="https://api.example",
        auth_password_pepper=secrets.token_urlsafe(32),
        auth_bcrypt_cost=12,
    )
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        assert client.get("/readyz").status_code == 200
        registered = client.post(
            "/v1/auth/register", json={"email": "tls@example.com", "password": STRONG_PASSWORD}
        )
        assert registered.status_code == 202
        # Every connection the service holds to its database is encrypted.
        sessions = tls.cluster.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.datname = %s AND a.pid <> pg_backend_pid()",
            database.database,
        )
        assert sessions and all(ssl for (ssl,) in sessions)


def test_a_server_certificate_from_another_ca_is_refused_with_a_clear_error(
    tls: TlsCluster,
) -> None:
    database = tls.cluster.create_database("taskstack_tls_wrong_ca")
    result = migrate(
        tls.url(database, sslmode="verify-full", sslrootcert=str(tls.wrong_ca_file)),
        **PRODUCTION,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("taskstack-auth-migrate: cannot reach the database: ")
    assert "certificate verify failed" in line
    assert PASSWORD not in result.stdout + result.stderr
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            tls.url(database, sslmode="verify-full", sslrootcert=str(tls.wrong_ca_file))
        ).close()


def test_plaintext_is_refused_in_production_by_the_migration_and_the_services(
    tls: TlsCluster, tmp_path: Path
) -> None:
    database = tls.cluster.create_database("taskstack_tls_plain")
    plain = tls.url(database, sslmode="disable")
    assert migrate(plain).returncode == 0  # development: the server itself takes plaintext

    refused = migrate(plain, **PRODUCTION)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "taskstack-auth-migrate: invalid configuration: DATABASE_URL must verify the server "
        "in production: add sslmode=verify-full&sslrootcert=system (or the path of a CA "
        "bundle), or set DATABASE_TRUSTED_NETWORK=true if the network is trusted"
    )

    generate_signing_key(tmp_path)
    service = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "taskstack.auth.main:create_app"],
        env={
            "PATH": os.environ["PATH"],
            **PRODUCTION,
            "DATABASE_URL": plain,
            "AUTH_SIGNING_KEYS_DIR": str(tmp_path),
            "AUTH_PASSWORD_PEPPER": secrets.token_urlsafe(32),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert service.returncode == 1
    assert (
        service.stderr.strip()
        .splitlines()[-1]
        .startswith("taskstack-auth: invalid configuration: DATABASE_URL must verify the server")
    )
    assert PASSWORD not in refused.stderr + service.stdout + service.stderr
    assert "Traceback" not in service.stderr


def test_sslrootcert_system_reads_the_store_ssl_cert_file_names(tls: TlsCluster) -> None:
    """psycopg's wheel bundles an OpenSSL whose own store (/usr/lib/psycopg-openssl) is
    empty: with sslrootcert=system it verifies against the operating system's CAs only
    when SSL_CERT_FILE or SSL_CERT_DIR names them, as the chart and the image do."""
    database = tls.cluster.create_database("taskstack_tls_system")
    system = tls.url(database, sslmode="verify-full", sslrootcert="system")
    without = migrate(system, **PRODUCTION)
    assert without.returncode == 1 and "certificate verify failed" in without.stderr
    named = migrate(system, **PRODUCTION, SSL_CERT_FILE=str(tls.ca_file))
    assert named.returncode == 0, named.stderr
