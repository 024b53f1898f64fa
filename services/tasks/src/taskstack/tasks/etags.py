"""Entity tags (RFC 9110 §8.8.3): a task's ETag is its version, quoted, and strong."""

import re
from dataclasses import dataclass

_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]*)"\s*')


def etag(version: int) -> str:
    return f'"{version}"'


@dataclass(frozen=True)
class EntityTags:
    """A parsed If-Match / If-None-Match value: ``*``, or a list of tags."""

    any: bool
    strong: frozenset[str]
    weak: frozenset[str]

    def versions_for_if_match(self) -> frozenset[int] | None:
        """The versions an If-Match accepts (strong comparison); None means any version."""
        if self.any:
            return None
        return frozenset(int(tag) for tag in self.strong if tag.isdigit() and len(tag) < 10)

    def matches_weakly(self, version: int) -> bool:
        """If-None-Match uses the weak comparison: W/"3" and "3" both match version 3."""
        return self.any or str(version) in self.strong | self.weak


def parse_entity_tags(value: str) -> EntityTags:
    """Parse a list of entity tags; malformed members are skipped (they match nothing)."""
    if value.strip() == "*":
        return EntityTags(any=True, strong=frozenset(), weak=frozenset())
    strong: set[str] = set()
    weak: set[str] = set()
    for member in value.split(","):
        match = _ENTITY_TAG.fullmatch(member)
        if match:
            (weak if match.group(1) else strong).add(match.group(2))
    return EntityTags(any=False, strong=frozenset(strong), weak=frozenset(weak))
