"""The auth service's own Prometheus metrics (bounded labels: results and grants only)."""

from prometheus_client import Counter

LOGINS = Counter(
    "taskstack_auth_logins",
    "Password sign-ins, by result: success, bad_credentials, throttled, overloaded "
    "(refused before the form was read, while hashing was full).",
    ["result"],
)
TOKENS_ISSUED = Counter(
    "taskstack_auth_tokens_issued",
    "Access and refresh token pairs issued, by grant type.",
    ["grant"],
)
REFRESH_TOKEN_REUSE = Counter(
    "taskstack_auth_refresh_token_reuse",
    "Spent refresh tokens presented again; each revoked its session.",
)
REGISTRATIONS = Counter(
    "taskstack_auth_registrations",
    "Registrations, by result: created, conflict, throttled.",
    ["result"],
)
