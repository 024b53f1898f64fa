import uuid
from datetime import UTC

from taskstack.common.models import new_id
from tests.common.demo import Note


def test_ids_are_time_ordered_uuid7() -> None:
    ids = [new_id() for _ in range(1000)]
    assert all(isinstance(i, uuid.UUID) and i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_new_rows_get_an_id_aware_timestamps_and_version_one() -> None:
    note = Note(text="x")
    assert note.id.version == 7
    assert note.created_at.tzinfo is UTC and note.updated_at.tzinfo is UTC
    assert note.version == 1


def test_constraints_are_named_by_the_convention() -> None:
    table = Note.__table__  # type: ignore[attr-defined]
    assert table.schema == "demo"
    assert table.primary_key.name == "pk_note"
