"""Ready means ready: GET /health is 503 {"status": "loading"} until the demo is loaded and
read by every function, and from its first 200 on every list is full, every item with a reason."""
from __future__ import annotations


def test_health_is_loading_until_the_demo_is_applied_then_lists_are_full(stack):
    watch = stack.health_watch
    assert watch.seen, "the watch polled /health"
    loading = [(at, body) for at, status, body in watch.seen if status != 200]
    assert loading and all(status == 503 for _, status, _ in watch.seen[:len(loading)])
    assert all(body["status"] == "loading" and body["waiting_for"] for _, body in loading)
    first_ok = next(at for at, status, _ in watch.seen if status == 200)
    assert all(at < first_ok for at, _ in loading), "no 503 after the first 200"
    assert first_ok >= stack.loaded_at - 0.5, "the first 200 comes once load_demo (events applied) returned"
    assert watch.seen[-1][2]["status"] == "ok" and watch.seen[-1][2]["items"] >= 9000
    for status, body in watch.first_lists:
        assert status == 200 and len(body["items"]) == 10, body
        assert all(item["reasons"] for item in body["items"]), body


def test_a_cold_users_filtered_list_gives_every_item_a_reason(api):
    status, body = api.get("/users/never-seen-before/recommendations", k=30, categories="Comedy", exclude="1,2")
    assert status == 200 and len(body["items"]) == 30
    for item in body["items"]:
        types = {r["type"] for r in item["reasons"]}
        assert types & {"popular", "trending", "context", "explored"}, item
