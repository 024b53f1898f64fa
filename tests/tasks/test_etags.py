"""ETag formatting and If-Match / If-None-Match parsing."""

from taskstack.tasks.etags import etag, parse_entity_tags


def test_etag_is_the_quoted_version() -> None:
    assert etag(7) == '"7"'


def test_if_match_uses_strong_comparison() -> None:
    assert parse_entity_tags('"3"').versions_for_if_match() == frozenset({3})
    assert parse_entity_tags('"3", W/"4" ,"5"').versions_for_if_match() == frozenset({3, 5})
    assert parse_entity_tags("*").versions_for_if_match() is None
    assert parse_entity_tags(" * ").versions_for_if_match() is None
    for garbage in ("3", '"abc"', "", '"99999999999999999999"', 'W/"3"', '"3'):
        assert parse_entity_tags(garbage).versions_for_if_match() == frozenset()


def test_if_none_match_uses_weak_comparison() -> None:
    assert parse_entity_tags('W/"3"').matches_weakly(3)
    assert parse_entity_tags('"2", "3"').matches_weakly(3)
    assert parse_entity_tags("*").matches_weakly(1)
    assert not parse_entity_tags('"2"').matches_weakly(3)
    assert not parse_entity_tags("garbage").matches_weakly(3)
