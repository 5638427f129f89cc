"""What a hostile client sends, over HTTP to the running local stack (issue #14): each case
gets a JSON 4xx in the API's shape or its documented behaviour, nothing it sends poisons
the stores, and afterwards a normal user is still served and their events applied within
2 s. The in-process edge cases (one handler, no stack) are tests/unit/test_edge.py; the
contract fuzzing is the schemathesis test of tests/integration/test_product_api.py."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from local_stack.client import ApiClient
from tests.integration.conftest import API_KEY

HUGE = "9" * 400


def is_error(status: int, body, code: str | None = None) -> bool:
    return 400 <= status < 500 and isinstance(body, dict) and set(body.get("error", {})) == {"code", "message"} \
        and (code is None or body["error"]["code"] == code)


def event_count(admin: ApiClient, user: str) -> int:
    status, held = admin.get(f"/users/{user}")
    return held["event_count"] if status == 200 else -1


def applied_within(admin: ApiClient, user: str, expected: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if event_count(admin, user) >= expected:
            return True
        time.sleep(0.05)
    return event_count(admin, user) >= expected


@pytest.mark.parametrize("attributes", [{"pages": int("1" * 41)}, {"weight": 1e300}, {"weight": 1e-200}])
def test_an_item_number_the_stores_cannot_hold_is_refused_and_the_catalog_keeps_serving(api, admin, attributes):
    item = f"hostile-{uuid.uuid4().hex[:6]}"
    status, body = admin.put(f"/items/{item}", {"title": "Hostile numbers", "attributes": attributes})
    assert is_error(status, body, "bad_request") and list(attributes)[0] in body["error"]["message"], body
    assert api.get(f"/items/{item}")[0] == 404
    status, listed = api.get(f"/users/hostile-{uuid.uuid4().hex[:6]}/recommendations", k=5)
    assert status == 200 and len(listed["items"]) == 5


@pytest.mark.parametrize("field", ["dwell_seconds", "timestamp", "value"])
def test_a_400_digit_number_refuses_that_event_alone(api, field):
    event = {"event_id": "e-1", "user_id": f"h-{uuid.uuid4().hex[:6]}", "type": "rating", "item_id": "1", "value": 4}
    raw = json.dumps({"events": [{**event, field: 0}]}).replace(f'"{field}": 0', f'"{field}": {HUGE}')
    status, body = api.call("POST", "/events", raw=raw.encode())
    assert status == 202 and body["accepted"] == 0 and body["errors"][0]["code"] == "invalid_event", body


@pytest.mark.parametrize("raw", [
    b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"events": [{"event_id": ',
    b'{"events": [' + b"9" * 5_000 + b"]}",
])
def test_a_body_that_is_not_json_we_read_is_a_400(api, raw):
    assert is_error(*api.call("POST", "/events", raw=raw), "bad_request")


def test_a_body_that_is_not_json_by_its_type_is_a_415_in_our_shape(stack):
    client = ApiClient(stack.url, API_KEY, headers={"Content-Type": "text/plain"})
    assert is_error(*client.call("POST", "/events", raw=b'{"events": []}'), "unsupported_media_type")


def test_an_encoded_slash_reaches_no_other_route(api):
    assert is_error(*api.get("/items/1%2Fsimilar"), "bad_request")
    assert is_error(*api.get("/users/a%2Fb/recommendations"), "bad_request")


def test_a_filter_naming_more_attributes_than_an_item_holds_is_refused(api):
    names = ",".join(f"a{n}:x" for n in range(60))
    status, body = api.get(f"/users/h-{uuid.uuid4().hex[:6]}/recommendations", k=5, attributes=names)
    assert is_error(status, body, "bad_request") and "50" in body["error"]["message"], body


def test_events_the_domain_could_not_take_are_refused_one_by_one(api):
    user = f"h-{uuid.uuid4().hex[:6]}"
    events = [{"event_id": "s-1", "user_id": user, "type": "search", "query": "zombies \ud800"},
              {"event_id": "v-1", "user_id": "a/b", "type": "view", "item_id": "1"},
              {"event_id": "v-2", "user_id": user, "type": "view", "item_id": "1"},
              {"event_id": "v-2", "user_id": user, "type": "view", "item_id": "2"}]
    raw = json.dumps({"events": events}).encode()  # json.dumps escapes the lone surrogate as \\ud800
    status, body = api.call("POST", "/events", raw=raw)
    assert status == 202 and body["accepted"] == 1, body
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (0, "invalid_event"), (1, "invalid_event"), (3, "duplicate_event")]


def test_events_in_flight_from_before_an_erase_do_not_bring_the_user_back(api, admin):
    user = f"erased-{uuid.uuid4().hex[:6]}"
    before = time.time() - 30
    assert api.post("/events", {"events": [{"event_id": "e-1", "user_id": user, "type": "click", "item_id": "1",
                                            "dwell_seconds": 40, "timestamp": before}]})[0] == 202
    assert applied_within(admin, user, 1, 10)
    assert admin.delete(f"/users/{user}")[0] == 200
    late = [{"event_id": "e-2", "user_id": user, "type": "click", "item_id": "2", "timestamp": before + 1}]
    assert api.post("/events", {"events": late})[0] == 202
    after = [{"event_id": "e-3", "user_id": user, "type": "click", "item_id": "3"}]
    assert api.post("/events", {"events": after})[0] == 202
    assert applied_within(admin, user, 1, 10)
    status, held = admin.get(f"/users/{user}")
    assert held["event_count"] == 1 and held["recent_items"] == ["3"] and held["erased_at"] is not None, held


def still_serves(api: ApiClient, admin: ApiClient) -> None:
    """A normal user's recommendations, and their event applied within 2 s; health clean."""
    user = f"normal-{uuid.uuid4().hex[:6]}"
    status, listed = api.get(f"/users/{user}/recommendations", k=10)
    assert status == 200 and len(listed["items"]) == 10
    assert api.post("/events", {"events": [{"event_id": "n-1", "user_id": user, "type": "click",
                                            "item_id": listed["items"][0]["item_id"], "dwell_seconds": 60}]})[0] == 202
    assert applied_within(admin, user, 1, 2.0), "the event was not applied within 2 s"
    status, health = api.get("/health")
    assert status == 200 and not health.get("refresh_error"), health


def test_after_all_of_it_a_normal_user_is_served_and_their_events_apply_within_2_s(api, admin):
    """Last in this module (pytest keeps file order): the stack survived the cases above."""
    still_serves(api, admin)
