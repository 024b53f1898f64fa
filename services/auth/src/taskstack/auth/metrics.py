"""The auth service's own Prometheus metrics (bounded labels: results and grants only)."""

from prometheus_client import Counter, Gauge

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
OUTBOX_BACKLOG = Gauge(
    "taskstack_auth_outbox_backlog",
    "Rows waiting in an outbox (mail, account_event), as this replica last counted them.",
    ["outbox"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "taskstack_auth_outbox_oldest_age_seconds",
    "Age of the oldest row waiting in an outbox; 0 when it is empty.",
    ["outbox"],
)
OUTBOX_DELIVERIES = Counter(
    "taskstack_auth_outbox_deliveries",
    "Outbox deliveries, by outbox and result: delivered, failed (retried later), dropped.",
    ["outbox", "result"],
)
MAIL_REQUESTS = Counter(
    "taskstack_auth_mail_requests",
    "Verification resends and password resets asked for, by purpose and result "
    "(accepted whether or not the address has an account, throttled).",
    ["purpose", "result"],
)
