"""Opaque, signed list cursors.

A cursor carries the position after which the next page starts (the last
row's sort value and id), bound to the caller and to the exact filters and
sort of the query it came from. It is HMAC-signed, so a client can neither
forge a position nor reuse a cursor for another user or another query: any
mismatch is a 400, never a 500 and never someone else's rows.
"""

import base64
import binascii
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from taskstack.tasks.errors import InvalidCursor

CURSOR_VERSION = 1
_MAC_BYTES = 16

SortValue = datetime | int | str | None


@dataclass(frozen=True)
class Position:
    """Where a page ended: the sort value and id of its last task."""

    sort_value: SortValue
    task_id: uuid.UUID


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode_value(value: SortValue) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(raw: Any) -> SortValue:
    if isinstance(raw, dict) and isinstance(raw.get("t"), str):
        return datetime.fromisoformat(raw["t"])
    if raw is None or isinstance(raw, int | str):
        return raw
    raise ValueError("unknown sort value")


class CursorCodec:
    """Signs and checks cursors with the service's cursor secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the cursor secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha256")[:_MAC_BYTES]

    def encode(self, position: Position, *, owner: uuid.UUID, fingerprint: str) -> str:
        document = {
            "v": CURSOR_VERSION,
            "o": owner.hex,
            "q": fingerprint,
            "k": _encode_value(position.sort_value),
            "i": position.task_id.hex,
        }
        # UTF-8, not \u escapes: a 200-character title stays at most 800 bytes.
        payload = orjson.dumps(document)
        return _b64encode(payload + self._mac(payload))

    def decode(self, cursor: str, *, owner: uuid.UUID, fingerprint: str) -> Position:
        """The position in ``cursor``, if it was made by us for this owner and query."""
        try:
            raw = _b64decode(cursor)
        except (binascii.Error, ValueError):
            raise InvalidCursor() from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor()
        try:
            document = json.loads(payload)
            valid = (
                document["v"] == CURSOR_VERSION
                and document["o"] == owner.hex
                and document["q"] == fingerprint
            )
            position = Position(_decode_value(document["k"]), uuid.UUID(hex=document["i"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidCursor() from None
        if not valid:
            raise InvalidCursor()
        return position
