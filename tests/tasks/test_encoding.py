"""Rows to JSON bytes: byte for byte what pydantic writes for TaskPublic and TaskPage."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from taskstack.tasks.encoding import FIELDS, EncodedTask, page_json, task_json
from taskstack.tasks.models import Priority, TaskPage, TaskPublic

ZONES = (
    UTC,
    ZoneInfo("Etc/UTC"),
    ZoneInfo("Europe/Paris"),
    ZoneInfo("America/St_Johns"),  # a half-hour offset
    ZoneInfo("Pacific/Kiritimati"),  # +14:00
    timezone(timedelta(hours=-5, minutes=-45)),
)


def row(**values: Any) -> tuple[Any, ...]:
    """A row of TASK_COLUMNS, as psycopg gives it: priority as its rank, and every time
    in the same zone (the session's TimeZone)."""
    moment = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    defaults: dict[str, Any] = {
        "title": "a task",
        "description": None,
        "completed": False,
        "priority": 1,
        "due_at": None,
        "tags": [],
        "id": uuid.UUID("0192f0c4-7d2a-7cc3-b1a6-3c5c1e0e9f00"),
        "completed_at": None,
        "created_at": moment,
        "updated_at": moment,
        "version": 1,
    }
    defaults.update(values)
    assert set(defaults) == set(FIELDS)
    return tuple(defaults[name] for name in FIELDS)


def public(values: Sequence[Any]) -> TaskPublic:
    """The model the service used to build from a row (times in UTC, priority by name)."""
    fields = dict(zip(FIELDS, values, strict=True))
    fields["priority"] = Priority.from_rank(fields["priority"])
    for name in ("due_at", "completed_at", "created_at", "updated_at"):
        if fields[name] is not None:
            fields[name] = fields[name].astimezone(UTC)
    return TaskPublic.model_construct(**fields)


def assert_same_bytes(values: tuple[Any, ...]) -> None:
    assert task_json(values) == public(values).model_dump_json().encode()


def test_every_kind_of_value_encodes_as_pydantic_does() -> None:
    whole = datetime(2026, 1, 31, 9, 0, 0)
    fraction = datetime(2026, 1, 31, 9, 0, 0, 120)
    for zone in ZONES:
        for moment in (whole.replace(tzinfo=zone), fraction.replace(tzinfo=zone)):
            assert_same_bytes(
                row(
                    title='écrire à Zoé 😀 "quoted" \\ back\tslash\n\u2028\x7f\x1f',
                    description="Lettre </script> & 50%",
                    completed=True,
                    priority=2,
                    due_at=moment,
                    tags=["home", "ünï", "a,b"],
                    completed_at=moment,
                    created_at=moment,
                    updated_at=moment + timedelta(microseconds=999_999),
                    version=2_147_483_647,
                )
            )
    for rank in (0, 1, 2):
        assert_same_bytes(row(priority=rank))


def test_times_are_written_in_utc_with_z() -> None:
    paris = datetime(2026, 7, 1, 12, 0, 0, 5, tzinfo=ZoneInfo("Europe/Paris"))
    assert b'"created_at":"2026-07-01T10:00:00.000005Z"' in task_json(row(created_at=paris))
    assert b'"created_at":"2026-03-29T01:30:00Z"' in task_json(row())


storable_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@given(
    title=storable_text,
    description=st.none() | storable_text,
    tags=st.lists(storable_text, max_size=3),
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(ZONES),
    ),
    version=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_any_storable_row_encodes_as_pydantic_does(
    title: str, description: str | None, tags: list[str], moment: datetime, version: int
) -> None:
    assert_same_bytes(
        row(
            title=title,
            description=description,
            tags=tags,
            due_at=moment,
            created_at=moment,
            version=version,
        )
    )


def test_a_page_encodes_as_task_page_does() -> None:
    paris = datetime(2026, 1, 1, 12, 30, 0, 7, tzinfo=ZONES[2])
    rows = [row(), row(title="second", due_at=paris, created_at=paris, updated_at=paris)]
    for next_cursor, total in ((None, None), ("abc_-", 0), ("x", 12)):
        expected = TaskPage(
            items=[public(values) for values in rows], next_cursor=next_cursor, total=total
        )
        assert page_json(rows, next_cursor, total) == expected.model_dump_json().encode()
    assert page_json([], None, None) == b'{"items":[],"next_cursor":null,"total":null}'


def test_an_encoded_task_knows_its_id_version_and_whether_it_was_just_completed() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    later = moment + timedelta(seconds=1)
    task = EncodedTask.of(row(version=7))
    assert (task.id, task.version, task.just_completed) == (row()[FIELDS.index("id")], 7, False)
    assert task.body == task_json(row(version=7))
    completing = row(completed=True, completed_at=later, updated_at=later)
    assert EncodedTask.of(completing).just_completed
    already = row(completed=True, completed_at=moment, updated_at=later)
    assert not EncodedTask.of(already).just_completed
