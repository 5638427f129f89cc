"""recsys.events: what a client may send, and how each field is checked."""
from __future__ import annotations

import pytest

from recsys.events import (
    CLIENT_EVENT_TYPES,
    ITEM_EVENT_TYPES,
    MAX_FUTURE_SKEW_SECONDS,
    MAX_ID_LENGTH,
    MAX_IMPRESSION_ITEMS,
    Event,
    InvalidEvent,
    parse_event,
    validate_id,
)
from recsys.live import LiveCatalog
from recsys.ports import Impression
from recsys.service import Recommender
from tests.fakes import (
    HashingEncoder,
    MemoryEventStream,
    MemoryItems,
    MemoryReleases,
    memory_recommender,
)

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def raw(**fields) -> dict:
    event = {"event_id": "e-1", "user_id": "u-1", "type": "click", "item_id": "i-1", "timestamp": NOW - 10}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize("event_type", sorted(ITEM_EVENT_TYPES - {"rating"}))
def test_item_events_are_valid_with_an_item(event_type: str) -> None:
    event = parse_event(raw(type=event_type), now=NOW)
    assert (event.type, event.item_id, event.user_id, event.event_id) == (event_type, "i-1", "u-1", "e-1")
    assert event.timestamp == NOW - 10


def test_rating_and_search_are_valid() -> None:
    assert parse_event(raw(type="rating", value=4.5), now=NOW).value == 4.5
    search = parse_event(raw(type="search", item_id=None, query="  space opera  "), now=NOW)
    assert (search.item_id, search.query) == (None, "space opera")


@pytest.mark.parametrize("event_type", sorted(ITEM_EVENT_TYPES))
def test_item_events_need_item_id(event_type: str) -> None:
    with pytest.raises(InvalidEvent, match="needs item_id"):
        parse_event(raw(type=event_type, item_id=None, value=3), now=NOW)


@pytest.mark.parametrize("query", [None, "", "   ", 42, "x" * 513])
def test_search_needs_a_query(query) -> None:
    with pytest.raises(InvalidEvent, match="query"):
        parse_event(raw(type="search", item_id=None, query=query), now=NOW)


@pytest.mark.parametrize("value", [None, -0.1, 5.01, "4", float("nan"), float("inf"), True])
def test_rating_needs_a_value_between_0_and_5(value) -> None:
    with pytest.raises(InvalidEvent, match="value"):
        parse_event(raw(type="rating", value=value), now=NOW)


@pytest.mark.parametrize("value", [0, 5, 2.75])
def test_rating_bounds_are_inclusive(value) -> None:
    assert parse_event(raw(type="rating", value=value), now=NOW).value == float(value)


def test_unknown_fields_are_rejected_and_named() -> None:
    with pytest.raises(InvalidEvent, match="unknown field.*price"):
        parse_event(raw(price=3), now=NOW)


@pytest.mark.parametrize("bad", [None, "not an object", ["click"]])
def test_an_event_must_be_an_object(bad) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(bad, now=NOW)


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="type"):
        parse_event(raw(type="like"), now=NOW)


@pytest.mark.parametrize("value", ["u-1", "a_b.c:d@e|f+g=h-i", "x" * MAX_ID_LENGTH])
def test_valid_ids(value: str) -> None:
    assert validate_id("user_id", value) == value


def test_integer_ids_become_strings() -> None:
    assert validate_id("user_id", 42) == "42"


@pytest.mark.parametrize("value", [None, "", "x" * (MAX_ID_LENGTH + 1), "has space", "tab\there", "é", "a#b",
                                   True, 1.5, ["a"]])
def test_invalid_ids_are_rejected_naming_the_field(value) -> None:
    with pytest.raises(InvalidEvent, match="user_id"):
        validate_id("user_id", value)


def test_an_id_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidEvent):
        validate_id("user_id", "abc\n")


def test_required_ids_in_an_event() -> None:
    for name in ("event_id", "user_id"):
        with pytest.raises(InvalidEvent, match=f"{name} is required"):
            parse_event(raw(**{name: None}), now=NOW)


def test_timestamp_as_epoch_seconds() -> None:
    assert parse_event(raw(timestamp=1_700_000_000), now=NOW).timestamp == 1_700_000_000.0


@pytest.mark.parametrize("iso", ["2024-05-01T11:00:00Z", "2024-05-01T13:00:00+02:00"])
def test_timestamp_as_iso_8601_with_a_timezone(iso: str) -> None:
    assert parse_event(raw(timestamp=iso), now=NOW).timestamp == NOW - 3600


@pytest.mark.parametrize("bad", ["2024-05-01T11:00:00", "yesterday", True, float("nan"), -1, [1]])
def test_bad_timestamps_are_rejected(bad) -> None:
    with pytest.raises(InvalidEvent, match="timestamp"):
        parse_event(raw(timestamp=bad), now=NOW)


def test_naive_iso_names_the_missing_timezone() -> None:
    with pytest.raises(InvalidEvent, match="timezone"):
        parse_event(raw(timestamp="2024-05-01T11:00:00"), now=NOW)


def test_future_timestamps_beyond_the_skew_are_rejected() -> None:
    assert parse_event(raw(timestamp=NOW + MAX_FUTURE_SKEW_SECONDS), now=NOW).timestamp == NOW + 300
    with pytest.raises(InvalidEvent, match="future"):
        parse_event(raw(timestamp=NOW + MAX_FUTURE_SKEW_SECONDS + 1), now=NOW)
    with pytest.raises(InvalidEvent, match="future"):
        parse_event(raw(timestamp="2024-05-01T12:10:00Z"), now=NOW)


def test_missing_timestamp_means_now() -> None:
    assert parse_event(raw(timestamp=None), now=NOW).timestamp == NOW


@pytest.mark.parametrize("dwell", [0, 12.5, 86_400])
def test_dwell_within_bounds(dwell) -> None:
    assert parse_event(raw(dwell_seconds=dwell), now=NOW).dwell_seconds == float(dwell)


@pytest.mark.parametrize("dwell", [-1, 86_400.5, "10", True, False])
def test_dwell_out_of_bounds_or_not_a_number(dwell) -> None:
    with pytest.raises(InvalidEvent, match="dwell_seconds"):
        parse_event(raw(dwell_seconds=dwell), now=NOW)


def test_to_json_round_trips_through_parse_event() -> None:
    event = parse_event(raw(type="rating", value=4, dwell_seconds=30, recommendation_id="r-9",
                            timestamp="2024-05-01T11:59:00Z"), now=NOW)
    data = event.to_json()
    assert "query" not in data
    assert parse_event(data, now=NOW) == event
    search = Event(event_id="e", user_id="u", type="search", timestamp=NOW, query="jazz")
    assert parse_event(search.to_json(), now=NOW) == search


def impression(**fields) -> dict:
    return raw(type="impression", item_id=None, event_id="rec-1", item_ids=["i-1", "i-2", 3], **fields)


def test_an_impression_names_the_items_of_the_list_in_order() -> None:
    event = parse_event(impression(), now=NOW)
    assert event.type == "impression" and event.item_ids == ("i-1", "i-2", "3") and event.item_id is None
    assert event.to_json()["item_ids"] == ["i-1", "i-2", "3"]
    assert parse_event(event.to_json(), now=NOW) == event
    full = raw(type="impression", item_id=None, item_ids=[f"i{n}" for n in range(MAX_IMPRESSION_ITEMS)])
    assert len(parse_event(full, now=NOW).item_ids) == MAX_IMPRESSION_ITEMS


@pytest.mark.parametrize(("item_ids", "message"), [
    (None, "needs item_ids"), ([], "needs item_ids"), ("i-1", "needs item_ids"),
    ([f"i{n}" for n in range(MAX_IMPRESSION_ITEMS + 1)], "1-100 item ids"),
    (["i-1", "bad id"], "item_ids must be"), (["i-1", None], "item_ids is required"),
    (["i-1", "i-1"], "twice")])
def test_bad_impression_item_lists_are_rejected(item_ids, message) -> None:
    with pytest.raises(InvalidEvent, match=message):
        parse_event(raw(type="impression", item_id=None, item_ids=item_ids), now=NOW)


def test_item_ids_belong_to_impressions_only() -> None:
    with pytest.raises(InvalidEvent, match="not item_id"):
        parse_event(raw(type="impression", item_ids=["i-2"]), now=NOW)
    with pytest.raises(InvalidEvent, match="only for impression events"):
        parse_event(raw(type="click", item_ids=["i-2"]), now=NOW)


def test_clients_cannot_send_impressions() -> None:
    with pytest.raises(InvalidEvent, match="recorded by the API itself"):
        parse_event(impression(), now=NOW, allowed=CLIENT_EVENT_TYPES)
    assert parse_event(raw(), now=NOW, allowed=CLIENT_EVENT_TYPES).type == "click"


def empty_recommender(stream: MemoryEventStream | None = None, clock=lambda: NOW) -> Recommender:
    """The API's service over in-memory stores, an empty catalog and no encoder use."""
    items = MemoryItems()
    encoder = HashingEncoder()
    return memory_recommender(encoder, LiveCatalog(MemoryReleases(), items, encoder.version, encoder.dim), items,
                              stream=stream, clock=clock)


def test_post_events_rejects_an_impression_and_takes_the_rest() -> None:
    stream = MemoryEventStream()
    answer = empty_recommender(stream).submit_events({"events": [raw(), impression()]})
    assert answer["accepted"] == 1 and [e.type for e in stream.events] == ["click"]
    [error] = answer["errors"]
    assert error["index"] == 1 and error["event_id"] == "rec-1" and error["code"] == "invalid_event"
    assert "recorded by the API itself" in error["message"]


def test_every_served_list_goes_on_the_stream_as_impressions_of_at_most_100_items() -> None:
    stream = MemoryEventStream()
    recommender = empty_recommender(stream)
    items = [f"i{n}" for n in range(150)]
    recommender._record(Impression("rec-9", "u-1", "control", "m", items, NOW))
    assert list(recommender.impressions.stored) == ["rec-9"]
    assert recommender.metrics_store.read("2024-05-01", "2024-05-01") == [
        {"variant": "control", "day": "2024-05-01", "impressions": 1, "clicks": 0, "conversions": 0}]
    assert [(e.event_id, e.type, e.user_id, e.timestamp, e.recommendation_id) for e in stream.events] == [
        ("rec-9", "impression", "u-1", NOW, "rec-9"), ("rec-9:1", "impression", "u-1", NOW, "rec-9")]
    assert [list(e.item_ids) for e in stream.events] == [items[:100], items[100:]]
    assert all(parse_event(e.to_json(), now=NOW) == e for e in stream.events), "what the stream carries parses back"
