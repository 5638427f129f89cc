"""local_stack.filters.matches: the Lambda event-filter patterns the local stack applies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_stack.filters import matches
from local_stack.template import Template


def record(event_name: str, **image) -> dict:
    return {"eventID": "1", "eventName": event_name, "eventSource": "aws:dynamodb",
            "dynamodb": {"Keys": {"item_id": {"S": "m-1"}}, "NewImage": image, "SizeBytes": 120}}


INSERT_OR_MODIFY = json.loads('{"eventName": ["INSERT", "MODIFY"]}')
CATALOG_FILTERS = [json.loads(f["Pattern"]) for f in next(
    s for s in Template(Path(__file__).resolve().parents[2] / "template.yaml", "recsys-local", "us-east-1")
    .event_sources() if s.function == "CatalogFunction").properties["FilterCriteria"]["Filters"]]


@pytest.mark.parametrize(("event_name", "image", "expected"), [
    ("INSERT", {"available": {"BOOL": True}}, True), ("MODIFY", {"available": {"BOOL": True}}, True),
    ("MODIFY", {}, True),  # written before the flag existed
    ("REMOVE", {}, False), ("MODIFY", {"available": {"BOOL": False}}, False),
    ("MODIFY", {"available": {"BOOL": False}, "deleted_at": {"N": "1"}}, False)])
def test_the_catalog_filter_passes_only_listable_items(event_name: str, image: dict, expected: bool) -> None:
    """The template's own patterns (any one matching lets a record through): an item deleted
    or set unavailable, or removed, is not re-encoded."""
    assert any(matches(p, record(event_name, **image)) for p in CATALOG_FILTERS) is expected


def test_a_missing_object_matches_only_exists_false_below_it() -> None:
    assert matches({"dynamodb": {"NewImage": {"available": {"BOOL": [{"exists": False}]}}}}, record("INSERT"))
    assert not matches({"dynamodb": {"NewImage": {"available": {"BOOL": [True]}}}}, record("INSERT"))


def test_nested_keys() -> None:
    pattern = {"dynamodb": {"NewImage": {"status": {"S": ["live"]}}}}
    assert matches(pattern, record("INSERT", status={"S": "live"}))
    assert not matches(pattern, record("INSERT", status={"S": "draft"}))
    assert not matches(pattern, record("INSERT"))
    assert not matches(pattern, {"dynamodb": "not an object"})


def test_every_key_must_match() -> None:
    pattern = {"eventName": ["INSERT"], "eventSource": ["aws:dynamodb"]}
    assert matches(pattern, record("INSERT"))
    assert not matches({**pattern, "eventSource": ["aws:kinesis"]}, record("INSERT"))


def test_prefix() -> None:
    pattern = {"dynamodb": {"Keys": {"item_id": {"S": [{"prefix": "m-"}]}}}}
    assert matches(pattern, record("INSERT"))
    assert not matches({"dynamodb": {"Keys": {"item_id": {"S": [{"prefix": "x-"}]}}}}, record("INSERT"))
    assert not matches({"dynamodb": {"SizeBytes": [{"prefix": "1"}]}}, record("INSERT"))


def test_exists() -> None:
    has_old = {"dynamodb": {"OldImage": [{"exists": True}]}}
    no_old = {"dynamodb": {"OldImage": [{"exists": False}]}}
    insert, modify = record("INSERT"), record("MODIFY")
    modify["dynamodb"]["OldImage"] = {"title": {"S": "old"}}
    assert not matches(has_old, insert) and matches(has_old, modify)
    assert matches(no_old, insert) and not matches(no_old, modify)


def test_anything_but() -> None:
    assert matches({"eventName": [{"anything-but": "REMOVE"}]}, record("INSERT"))
    assert not matches({"eventName": [{"anything-but": "REMOVE"}]}, record("REMOVE"))
    assert not matches({"eventName": [{"anything-but": ["INSERT", "MODIFY"]}]}, record("MODIFY"))
    assert not matches({"missing": [{"anything-but": "x"}]}, record("INSERT"))


@pytest.mark.parametrize(("size", "expected"), [(99.5, False), (100.0, True), (150.5, True), (200.0, False)])
def test_numeric_ranges(size: float, expected: bool) -> None:
    pattern = {"dynamodb": {"SizeBytes": [{"numeric": [">=", 100, "<", 200]}]}}
    event = record("INSERT")
    event["dynamodb"]["SizeBytes"] = size
    assert matches(pattern, event) is expected


@pytest.mark.parametrize("size", [99, 200, 5000])
def test_numeric_ranges_on_integer_values(size: int) -> None:
    pattern = {"dynamodb": {"SizeBytes": [{"numeric": [">=", 100, "<", 200]}]}}
    event = record("INSERT")
    event["dynamodb"]["SizeBytes"] = size
    assert not matches(pattern, event)


def test_numeric_rule_needs_a_number() -> None:
    assert not matches({"eventName": [{"numeric": [">", 0]}]}, record("INSERT"))


def test_a_missing_key_does_not_match() -> None:
    assert not matches({"userIdentity": ["dynamodb.amazonaws.com"]}, record("INSERT"))
    assert not matches({"userIdentity": {"type": ["Service"]}}, record("INSERT"))
    assert not matches({"eventName": [None]}, record("INSERT"))


def test_a_list_value_matches_any_element() -> None:
    assert matches({"tags": ["b"]}, {"tags": ["a", "b"]})
    assert not matches({"tags": ["c"]}, {"tags": ["a", "b"]})


def test_an_empty_pattern_matches_any_object_but_not_other_values() -> None:
    assert matches({}, record("REMOVE"))
    assert not matches(INSERT_OR_MODIFY, "INSERT")


def test_an_unsupported_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        matches({"eventName": [{"suffix": "T"}]}, record("INSERT"))
