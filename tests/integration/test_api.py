"""The REST API's contract over HTTP: status codes, error bodies, limits."""
from __future__ import annotations

import uuid

import pytest

from local_stack.client import ApiClient


def is_error(body, code: str | None = None) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return bool(error and error.get("message") and (code is None or error.get("code") == code))


@pytest.mark.parametrize("path", ["/health", "/items/1", "/users/1/recommendations", "/items/1/similar"])
def test_every_route_needs_the_api_key(stack, path):
    for key in (None, "wrong-key"):
        status, body = ApiClient(stack.url, key).get(path)
        assert status == 403 and is_error(body, "forbidden")
    assert ApiClient(stack.url, None).post("/events", {"events": []})[0] == 403
    assert ApiClient(stack.url, None).put("/items/x", {"title": "x"})[0] == 403


@pytest.mark.parametrize("k", ["0", "101", "ten", "-1"])
def test_k_is_between_1_and_100(api, k):
    for path in ("/users/1/recommendations", "/items/1/similar"):
        status, body = api.get(path, k=k)
        assert status == 400 and is_error(body, "bad_request"), (path, k, body)


def test_k_bounds_are_served(api):
    assert len(api.get("/users/1/recommendations", k=1)[1]["items"]) == 1
    assert len(api.get("/users/1/recommendations", k=100)[1]["items"]) == 100


def test_unknown_things_are_404_with_a_json_error(api):
    status, body = api.get("/items/no-such-item")
    assert status == 404 and is_error(body, "not_found")
    status, body = api.get("/items/no-such-item/similar")
    assert status == 404 and is_error(body, "not_found")
    status, body = api.get("/no/such/route")
    assert status == 404 and is_error(body, "no_route")


@pytest.mark.parametrize("body,fragment", [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "x", "colour": "red"}, "unknown field"),
    ({"title": "x", "categories": "Horror"}, "categories"),
    ({"title": "x", "attributes": {"nested": {"a": 1}}}, "attribute"),
])
def test_bad_items_are_refused_with_the_reason(admin, body, fragment):
    status, answer = admin.put(f"/items/bad-{uuid.uuid4().hex[:6]}", body)
    assert status == 400 and is_error(answer, "bad_request") and fragment in answer["error"]["message"]


def test_a_body_that_is_not_json_is_refused(api, admin):
    status, body = admin.call("PUT", "/items/x", raw=b"{not json")
    assert status == 400 and is_error(body, "bad_request")
    status, body = api.call("POST", "/events", raw=b"\xff\xfe")
    assert status == 400 and is_error(body)


def test_bad_ids_are_refused(api):
    status, body = api.get("/users/a%20b/recommendations")
    assert status == 400 and is_error(body, "bad_request") and "user_id" in body["error"]["message"]


def test_event_batches_are_bounded(api):
    events = [{"event_id": f"e{i}", "user_id": "bounded", "type": "view", "item_id": "1"} for i in range(501)]
    status, body = api.post("/events", {"events": events})
    assert status == 400 and "500" in body["error"]["message"]
    status, body = api.post("/events", {"events": []})
    assert status == 400 and is_error(body)


def test_each_bad_event_gets_its_own_reason(api):
    user = f"reasons-{uuid.uuid4().hex[:6]}"
    status, body = api.post("/events", {"events": [
        {"event_id": "a", "user_id": user, "type": "click", "item_id": "1", "timestamp": 4102444800},
        {"event_id": "b", "user_id": user, "type": "rating", "item_id": "1", "value": 9},
        {"event_id": "c", "user_id": user, "type": "search"},
        "not an object",
        {"event_id": "e", "user_id": user, "type": "search", "query": "space"},
    ]})
    assert status == 202 and body["accepted"] == 1
    reasons = {e["index"]: e["message"] for e in body["errors"]}
    assert set(reasons) == {0, 1, 2, 3}
    assert "future" in reasons[0] and "value" in reasons[1] and "query" in reasons[2] and "object" in reasons[3]


def test_a_context_steers_a_cold_users_recommendations(api, movies):
    user = f"cold-{uuid.uuid4().hex[:6]}"
    _, plain = api.get(f"/users/{user}/recommendations", k=10)
    _, steered = api.get(f"/users/{user}/recommendations", k=10, context="animated films for children")
    animated = [i["item_id"] for i in steered["items"] if "Animation" in movies[i["item_id"]].categories]
    assert plain["items"] != steered["items"] and len(animated) >= 5


@pytest.mark.parametrize("method", ["TRACE", "FOO", "PATCH", "DELETE", "OPTIONS", "CONNECT"])
def test_a_method_no_route_has_is_the_templates_missing_route_answer(stack, method):
    """API Gateway answers an unknown method or path itself (MISSING_AUTHENTICATION_TOKEN,
    mapped to 404 {"error": {"code": "no_route"}} by the template), never http.server's 501."""
    import http.client
    import json

    host, port = stack.url.removeprefix("http://").split(":")
    for path in ("/health", "/no/such/route"):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request(method, path, headers={"x-api-key": stack.api_key})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == 404 and is_error(body, "no_route"), (method, path, response.status, body)
        assert response.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
