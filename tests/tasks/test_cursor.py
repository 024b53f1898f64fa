"""Cursor encoding: a round trip, and every way a cursor can be wrong."""

import base64
import uuid
from datetime import UTC, datetime

import pytest

from taskstack.tasks.cursor import CursorCodec, Position
from taskstack.tasks.errors import InvalidCursor
from taskstack.tasks.listing import TaskListParams

OWNER = uuid.uuid4()
FINGERPRINT = TaskListParams().fingerprint()


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(b"insecure-development-test-secret")


@pytest.mark.parametrize(
    "value", [datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), None, 2, "Title ünïcode \"'"]
)
def test_round_trip(codec: CursorCodec, value: datetime | int | str | None) -> None:
    position = Position(value, uuid.uuid4())
    cursor = codec.encode(position, owner=OWNER, fingerprint=FINGERPRINT)
    assert cursor.isascii() and "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert codec.decode(cursor, owner=OWNER, fingerprint=FINGERPRINT) == position


def test_every_altered_byte_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode(Position(5, uuid.uuid4()), owner=OWNER, fingerprint=FINGERPRINT)
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor):
            codec.decode(text, owner=OWNER, fingerprint=FINGERPRINT)


@pytest.mark.parametrize(
    "cursor", ["", "x", "!!!!", "a" * 1000, "e30", "===", "ZZZZ" * 10, "é", "\x00"]
)
def test_garbage_is_refused(codec: CursorCodec, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        codec.decode(cursor, owner=OWNER, fingerprint=FINGERPRINT)


def test_another_owner_query_or_secret_is_refused(codec: CursorCodec) -> None:
    cursor = codec.encode(Position(1, uuid.uuid4()), owner=OWNER, fingerprint=FINGERPRINT)
    with pytest.raises(InvalidCursor):
        codec.decode(cursor, owner=uuid.uuid4(), fingerprint=FINGERPRINT)
    other_query = TaskListParams(completed=True).fingerprint()
    with pytest.raises(InvalidCursor):
        codec.decode(cursor, owner=OWNER, fingerprint=other_query)
    with pytest.raises(InvalidCursor):
        CursorCodec(b"another-secret-of-enough-length").decode(
            cursor, owner=OWNER, fingerprint=FINGERPRINT
        )


def test_the_fingerprint_covers_filters_and_sort_but_not_the_page_size() -> None:
    base = TaskListParams.model_validate({"priority": ["high", "low"], "tag": ["a", "b"]})
    same = TaskListParams.model_validate(
        {"priority": ["low", "high"], "tag": ["b", "a"], "limit": 5, "include_total": True}
    )
    assert base.fingerprint() == same.fingerprint()
    for change in ({"sort": "title"}, {"q": "milk"}, {"completed": False}, {"overdue": True}):
        assert TaskListParams.model_validate(change).fingerprint() != FINGERPRINT


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CursorCodec(b"short")
