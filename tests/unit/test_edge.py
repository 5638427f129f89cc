"""Hostile input at the edge (issue #14): every malformed request is a JSON 4xx in the API's
shape, refused before anything is stored or put on the stream. These requests go through
the API function's real handler (functions/api/app.py) and reach no AWS: a request that got
past the edge would fail on the missing credentials instead of answering 4xx."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.catalog import InvalidItem, parse_item, storable_number
from recsys.events import InvalidEvent, parse_event
from recsys.index import ItemIndex
from recsys.selection import parse_filters
from recsys.service import Unavailable
from tests.api_events import LambdaContext, api_event
from tests.fakes import MemoryEventStream, memory_recommender

HUGE = "9" * 400


def answer(api_module, event: dict) -> tuple[int, dict]:
    response = api_module.lambda_handler(event, LambdaContext())
    body = json.loads(response["body"])
    return response["statusCode"], body


def put_item(body: str) -> dict:
    return api_event("/items/x", method="PUT", body=body)


@pytest.mark.parametrize(("body", "status"), [
    (json.dumps({"title": "t", "attributes": {"a": 10 ** 40}}), 400),   # 41 digits: DynamoDB keeps 38
    ('{"title": "t", "attributes": {"a": ' + HUGE + "}}", 400),
    ('{"title": "t", "attributes": {"a": 1e300}}', 400),
    ('{"title": "t", "attributes": {"a": 1e-200}}', 400),
    ('{"title": "t", "attributes": {"a": ' + "9" * 5000 + "}}", 400),    # over Python's int parsing limit
    ('{"title": "a\\ud800"}', 400),                                     # a lone surrogate
    ('{"title": "t", "attributes": {"\\udfff": 1}}', 400),
    ('{"title": ' + "[" * 100_000 + "]" * 100_000 + "}", 400),
    ('{"title": ' + "[" * 500 + "]" * 500 + "}", 400),
])
def test_an_item_the_stores_cannot_hold_is_a_400_in_the_apis_shape(api_module, body, status):
    code, answer_body = answer(api_module, put_item(body))
    assert code == status and set(answer_body["error"]) == {"code", "message"}, answer_body


@pytest.mark.parametrize("field", ["dwell_seconds", "timestamp", "value"])
def test_a_400_digit_number_in_an_event_refuses_that_event(api_module, field):
    event = {"event_id": "e-1", "user_id": "u-1", "type": "rating", "item_id": "1", "value": 4}
    body = json.dumps({"events": [{**event, field: 0}]}).replace(f'"{field}": 0', f'"{field}": {HUGE}')
    code, answer_body = answer(api_module, api_event("/events", method="POST", body=body))
    assert code == 202 and answer_body["accepted"] == 0
    assert answer_body["errors"][0]["code"] == "invalid_event" and field in answer_body["errors"][0]["message"]


def test_a_search_with_a_lone_surrogate_is_refused_alone_and_a_paired_one_is_text():
    stream = MemoryEventStream()
    service = memory_recommender(None, None, stream=stream)
    lone = {"event_id": "e-1", "user_id": "u-1", "type": "search", "query": "zombies \ud800"}
    paired = {"event_id": "e-2", "user_id": "u-1", "type": "search", "query": "zombies \U0001F9DF"}
    result = service.submit_events({"events": [lone, paired]})
    assert result["accepted"] == 1 and [e["index"] for e in result["errors"]] == [0]
    assert "surrogate" in result["errors"][0]["message"]
    assert [e.event_id for e in stream.events] == ["e-2"]


def test_a_repeated_event_id_in_one_request_is_sent_once_and_reported():
    stream = MemoryEventStream()
    service = memory_recommender(None, None, stream=stream)
    view = {"event_id": "e-1", "user_id": "u-1", "type": "view", "item_id": "1"}
    result = service.submit_events({"events": [view, {**view, "item_id": "2"}, {**view, "user_id": "u-2"}]})
    assert result["accepted"] == 2
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(1, "duplicate_event")]
    assert [(e.user_id, e.item_id) for e in stream.events] == [("u-1", "1"), ("u-2", "1")]


@pytest.mark.parametrize(("event", "status", "code"), [
    (api_event("/events", method="POST", body='{"events": []}', content_type="text/plain"), 415,
     "unsupported_media_type"),
    (api_event("/items/x", method="PATCH", body="{}"), 405, "method_not_allowed"),
    (api_event("/trending", method="POST", body="{}"), 405, "method_not_allowed"),
    (api_event("/nowhere"), 404, "no_route"),
    (api_event("/events", method="POST", body='{"events": [' + "1," * 600_000 + "1]}"), 413, "payload_too_large"),
    (api_event("/events", method="POST", body='{"events": [{"event_id": '), 400, "bad_request"),
    (api_event("/users/u/recommendations", {"context": "zombies \ud800"}), 400, "bad_request"),
])
def test_malformed_requests_get_our_error_shape(api_module, event, status, code):
    got, body = answer(api_module, event)
    assert (got, body["error"]["code"]) == (status, code), body


def test_a_known_path_asked_with_another_method_says_which_it_takes(api_module):
    response = api_module.lambda_handler(api_event("/items/x", method="PATCH", body="{}"), LambdaContext())
    assert response["headers"]["Allow"] == "DELETE, GET, PUT" if "headers" in response else \
        response["multiValueHeaders"]["Allow"] == ["DELETE, GET, PUT"]


def test_an_encoded_slash_never_reaches_another_route(api_module):
    """GET /items/1%2Fsimilar: the gateway decodes the path to /items/1/similar, which the
    function's router would answer as item 1's similar items; its path parameter still holds
    the slash, and ids never contain one, so the request is refused."""
    event = {**api_event("/items/1/similar"), "resource": "/items/{item_id}",
             "pathParameters": {"item_id": "1/similar"}}
    code, body = answer(api_module, event)
    assert code == 400 and "item_id" in body["error"]["message"]
    with pytest.raises(InvalidEvent):
        parse_event({"event_id": "e", "user_id": "a/b", "type": "view", "item_id": "1"})


def test_numbers_are_storable_within_dynamodbs_range():
    assert storable_number(10 ** 38 - 1) and not storable_number(10 ** 38) and not storable_number(-(10 ** 38))
    assert storable_number(0) and storable_number(0.0) and storable_number(1e-130) and storable_number(-9.9e125)
    assert not storable_number(1e-131) and not storable_number(1e126) and not storable_number(float("nan"))
    assert not storable_number(True)
    assert parse_item("x", {"title": "t", "attributes": {"year": 1995, "price": 9.99}}).attributes["year"] == 1995
    with pytest.raises(InvalidItem, match="38 significant digits"):
        parse_item("x", {"title": "t", "attributes": {"a": 10 ** 40}})


def test_a_filter_names_at_most_as_many_attributes_as_an_item_holds():
    parse_filters(attributes=",".join(f"a{i}:1" for i in range(50)))
    with pytest.raises(ValueError, match="at most 50 attributes"):
        parse_filters(attributes=",".join(f"a{i}:1" for i in range(30)), minimum=",".join(f"b{i}:1" for i in range(30)))


def test_made_up_attribute_names_do_not_grow_the_cache():
    index = ItemIndex(dim=2)
    for n in range(3):
        index.upsert(f"i{n}", np.array([1.0, 0.0], dtype=np.float32), attributes={"year": 1990 + n})
    numbers, _ = index.attribute("year")
    assert numbers.tolist() == [1990, 1991, 1992]
    for name in (f"made-up-{n}" for n in range(100)):
        numbers, text = index.attribute(name)
        assert np.isnan(numbers).all() and (text == "").all()
    assert set(index._columns) == {"year"}


def test_events_the_stream_took_none_of_are_a_503_and_a_partial_put_names_the_rest():
    view = {"user_id": "u-1", "type": "view", "item_id": "1"}
    events = [{**view, "event_id": f"e-{n}"} for n in range(3)]
    with pytest.raises(Unavailable, match="none of the 3"):
        memory_recommender(None, None, stream=MemoryEventStream(refuse=3)).submit_events({"events": events})
    result = memory_recommender(None, None, stream=MemoryEventStream(refuse=1)).submit_events(
        {"events": [*events, {"event_id": "bad"}]})
    assert result["accepted"] == 2
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(2, "throttled"), (3, "invalid_event")]
