"""Text PostgreSQL can store: no NUL (text cannot hold it) and no lone surrogate (psycopg
cannot encode it). Checked before any SQL runs, so such input is a 4xx, never a 500."""

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> bool:
    return _UNSTORABLE.search(value) is None
