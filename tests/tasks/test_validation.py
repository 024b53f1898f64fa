"""The task bodies' validation, without a server: what is accepted, normalised or refused."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from taskstack.tasks.models import Priority, TaskCreate, TaskUpdate


def refused(model: type[TaskCreate] | type[TaskUpdate], body: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [error["loc"] for error in caught.value.errors()]


def test_defaults_and_trimmed_title() -> None:
    task = TaskCreate.model_validate({"title": "  buy milk \n"})
    assert task.title == "buy milk"
    assert (task.description, task.completed, task.priority, task.due_at, task.tags) == (
        None,
        False,
        Priority.NORMAL,
        None,
        [],
    )


@pytest.mark.parametrize(
    "title", ["", "   ", "x" * 201, 5, None, ["a"], "nul\x00byte", "lone \ud800 surrogate"]
)
def test_bad_titles(title: object) -> None:
    assert refused(TaskCreate, {"title": title}) == [("title",)]


def test_title_length_counts_after_trimming() -> None:
    assert TaskCreate.model_validate({"title": " " + "x" * 200 + " "}).title == "x" * 200


def test_description_limits() -> None:
    assert TaskCreate.model_validate({"title": "t", "description": "d" * 10_000}).description
    assert refused(TaskCreate, {"title": "t", "description": "d" * 10_001}) == [("description",)]
    assert refused(TaskCreate, {"title": "t", "description": "a\x00"}) == [("description",)]


@pytest.mark.parametrize("completed", ["true", 1, 0, "yes", None])
def test_completed_must_be_a_json_boolean(completed: object) -> None:
    assert refused(TaskCreate, {"title": "t", "completed": completed}) == [("completed",)]


@pytest.mark.parametrize("priority", ["urgent", "HIGH", 2, None, ""])
def test_priority_is_one_of_three_words(priority: object) -> None:
    assert refused(TaskCreate, {"title": "t", "priority": priority}) == [("priority",)]


def test_tags() -> None:
    tags = [f"tag-{n}" for n in range(20)]
    assert TaskCreate.model_validate({"title": "t", "tags": tags}).tags == tags
    assert TaskCreate.model_validate({"title": "t", "tags": [" home "]}).tags == ["home"]
    assert refused(TaskCreate, {"title": "t", "tags": [*tags, "one-more"]}) == [("tags",)]
    assert refused(TaskCreate, {"title": "t", "tags": ["a", "a"]}) == [("tags",)]
    assert refused(TaskCreate, {"title": "t", "tags": ["x" * 33]}) == [("tags", 0)]
    assert refused(TaskCreate, {"title": "t", "tags": [" "]}) == [("tags", 0)]
    assert refused(TaskCreate, {"title": "t", "tags": "home"}) == [("tags",)]
    assert refused(TaskCreate, {"title": "t", "tags": [7]}) == [("tags", 0)]


def test_due_at_is_normalised_to_utc() -> None:
    task = TaskCreate.model_validate({"title": "t", "due_at": "2030-05-01T10:00:00+02:00"})
    assert task.due_at == datetime(2030, 5, 1, 8, 0, tzinfo=UTC)
    assert task.due_at is not None and task.due_at.tzinfo is UTC
    z = TaskCreate.model_validate({"title": "t", "due_at": "2030-05-01T08:00:00.123456Z"})
    assert z.due_at == datetime(2030, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "due_at",
    [
        "2030-05-01T10:00:00",  # no offset
        "2030-05-01",
        "tomorrow",
        "2030-13-01T00:00:00Z",
        1_900_000_000,
        "1900000000",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:00:00-05:00",  # after year 9999 in UTC
        "2030-05-01T10:00:00Z" + " " * 100,
    ],
)
def test_bad_due_at(due_at: object) -> None:
    assert refused(TaskCreate, {"title": "t", "due_at": due_at}) == [("due_at",)]


@pytest.mark.parametrize(
    "field", ["id", "owner_id", "owner", "version", "created_at", "updated_at", "completed_at", "x"]
)
def test_unknown_and_read_only_fields_are_refused(field: str) -> None:
    assert refused(TaskCreate, {"title": "t", field: "1"}) == [(field,)]
    assert refused(TaskUpdate, {field: "1"}) == [(field,)]


def test_patch_knows_which_fields_it_sets() -> None:
    patch = TaskUpdate.model_validate({"description": None, "priority": "high"})
    assert patch.changes() == {"description": None, "priority": Priority.HIGH}
    assert TaskUpdate.model_validate({}).changes() == {}


@pytest.mark.parametrize("field", ["title", "completed", "priority", "tags"])
def test_patch_cannot_remove_a_required_field(field: str) -> None:
    assert refused(TaskUpdate, {field: None}) == [(field,)]


def test_patch_validates_like_create() -> None:
    assert refused(TaskUpdate, {"title": " "}) == [("title",)]
    assert refused(TaskUpdate, {"due_at": "2030-01-01T00:00:00"}) == [("due_at",)]
    assert TaskUpdate.model_validate({"due_at": None}).changes() == {"due_at": None}
