"""Input types shared by bodies and query parameters.

PostgreSQL refuses NUL in text and psycopg cannot encode lone surrogates, so
both are refused here, as a 422 naming the field, before any SQL runs.
"""

import contextlib
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# The same rules, said in the JSON Schema (ECMA-262 regular expressions), so
# that a client generating values from the OpenAPI document knows them: no NUL
# and, where whitespace is stripped, something left after stripping. pydantic
# strips the characters of Unicode's White_Space property.
_WHITE_SPACE = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{_WHITE_SPACE}][^\x00]*$"
_NO_NUL = Field(json_schema_extra={"pattern": NO_NUL_PATTERN})
_NOT_BLANK = Field(json_schema_extra={"pattern": NOT_BLANK_PATTERN})


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


_EXAMPLE = "for example 2026-01-31T09:00:00Z"


def _how_to_write(value: str) -> str:
    """What to send instead of a string that is not a date-time.

    A query string decodes an unencoded + as a space, so a +02:00 offset sent
    as such arrives as " 02:00": say so when putting the + back would parse.
    """
    before, space, after = value.rpartition(" ")
    with contextlib.suppress(ValueError):
        if space and datetime.fromisoformat(f"{before}+{after}").tzinfo is not None:
            return (
                "must be an ISO 8601 date-time with a UTC offset: its + arrived as a space "
                "(a query string reads an unencoded + as a space), so send + as %2B, or use Z"
            )
    return f"must be an ISO 8601 date-time with a UTC offset, {_EXAMPLE}"


def _aware_datetime(value: object) -> datetime:
    """An RFC 3339 / ISO 8601 string with a UTC offset, normalised to UTC.

    Numbers (Unix times) and naive times are refused rather than guessed at.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(_how_to_write(value)) from None
    else:
        raise ValueError(f"must be an ISO 8601 date-time string with a UTC offset, {_EXAMPLE}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a UTC offset (for example Z or +02:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Title = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_storable),
    _NOT_BLANK,
]
Description = Annotated[
    str, StringConstraints(strict=True, max_length=10_000), AfterValidator(_storable), _NO_NUL
]
Tag = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=32),
    AfterValidator(_storable),
    _NOT_BLANK,
]
SearchText = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_storable),
    _NOT_BLANK,
]
AwareDatetime = Annotated[
    datetime,
    BeforeValidator(_aware_datetime),
    Field(json_schema_extra={"format": "date-time"}),
]

MAX_TAGS = 20


def _distinct(tags: list[str]) -> list[str]:
    if len(set(tags)) != len(tags):
        raise ValueError("must not repeat a tag")
    return tags


Tags = Annotated[
    list[Tag],
    Field(max_length=MAX_TAGS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]
