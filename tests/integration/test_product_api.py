"""The product API end to end over HTTP: keys, the OpenAPI contract (schemathesis),
filters, rank, reasons, exploration, diversity, user data, erasure and A/B metrics."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from local_stack.client import ApiClient
from recsys import experiments, selection
from recsys.index import ItemIndex
from recsys.live import POPULARITY_REFRESH_SECONDS
from recsys.popularity import LivePopularity, PopularityCounters
from tests.integration.conftest import ADMIN_KEY, API_KEY, CATALOG

# Bounded: about 8 requests per route, enough to cover the spec's limits and odd values.
SCHEMATHESIS_EXAMPLES = 8


def ids(body) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


def is_error(body) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return bool(error and isinstance(error.get("code"), str) and error.get("message"))


def concrete(path: str) -> str:
    return path.replace("{item_id}", "1").replace("{user_id}", "1")


def test_every_route_refuses_no_key_a_wrong_key_and_the_other_apis_key(stack):
    routes = stack.template.routes()
    assert {r.api for r in routes} == {"RecsysApi", "RecsysAdminApi"}
    for route in routes:
        other = API_KEY if route.api == "RecsysAdminApi" else ADMIN_KEY
        for key in (None, "wrong-key", other):
            body = {"item_ids": ["1"]} if route.method in ("POST", "PUT") else None
            status, answer = ApiClient(stack.url, key).call(route.method, concrete(route.path), body)
            assert status == 403 and is_error(answer), (route.method, route.path, key, status, answer)


@pytest.fixture(scope="module")
def api_schema(stack):
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json", headers={"x-api-key": API_KEY})


def test_no_input_gives_a_5xx_and_every_4xx_is_a_json_error(api_schema, stack):
    """Generated from the spec the stack serves, sent with the clients' key (the admin
    routes answer 403, the others whatever the input deserves): never a 5xx, and every
    4xx carries {"error": {"code", "message"}}. Each operation gets its own bounded run."""
    failures, operations = [], 0
    for found in api_schema.get_all_operations():
        operation = found.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=stack.url, headers={"x-api-key": API_KEY})
            if response.status_code >= 500 or (response.status_code >= 400 and not _json_error(response)):
                failures.append((case.method, case.formatted_path, case.query, response.status_code,
                                 response.text[:200]))

        check()
    assert operations == len(stack.template.routes()) - 1  # all but /openapi.json itself
    assert failures == []


def _json_error(response) -> bool:
    try:
        return is_error(response.json())
    except ValueError:
        return False


def test_the_spec_documents_every_route(api):
    status, spec = api.get("/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert {"/users/{user_id}/rank", "/metrics", "/users/{user_id}"} <= set(spec["paths"])


def test_limits_are_enforced(api, stack):
    status, body = api.post("/users/1/rank", {"item_ids": [str(n) for n in range(501)]})
    assert status == 400 and is_error(body) and "item_ids" in body["error"]["message"]
    status, body = api.call("POST", "/events", raw=b'{"events": ["' + b"x" * (1024 * 1024) + b'"]}')
    assert status == 413 and is_error(body)
    status, body = api.get("/users/1/recommendations", context="x" * 513)
    assert status == 400 and is_error(body)


@pytest.fixture(scope="module")
def catalog_index():
    return ItemIndex.from_npz(CATALOG.read_bytes())[0]


def test_filters_apply_to_recommendations_and_similar_items(api, movies):
    _, plain = api.get("/users/1/recommendations", k=10)
    status, body = api.get("/users/1/recommendations", k=20, categories="Comedy,Drama", exclude_categories="Horror",
                           min="year:1990", max="year:1999", exclude=",".join(ids(plain)[:3]))
    assert status == 200 and len(body["items"]) == 20
    for item_id in ids(body):
        movie = movies[item_id]
        assert {"Comedy", "Drama"} & set(movie.categories) and "Horror" not in movie.categories
        assert 1990 <= movie.attributes["year"] <= 1999 and item_id not in ids(plain)[:3]
    status, similar = api.get("/items/1/similar", k=10, attributes="year:1995")
    assert status == 200 and all(movies[i].attributes["year"] == 1995 for i in ids(similar))
    status, body = api.get("/users/1/recommendations", attributes="year")
    assert status == 400 and is_error(body)


def test_consumed_items_are_excluded_unless_asked(api, admin):
    user = f"consumer-{uuid.uuid4().hex[:6]}"
    api.post("/events", {"events": [{"event_id": f"{user}-1", "user_id": user, "type": "purchase", "item_id": "1"}]})
    deadline = time.time() + 10
    while time.time() < deadline and admin.get(f"/users/{user}")[1]["consumed_count"] < 1:
        time.sleep(0.2)
    _, with_consumed = api.get(f"/users/{user}/recommendations", k=100, include_consumed="true",
                               context="Toy Story animated toys")
    assert "1" in ids(with_consumed)
    _, without = api.get(f"/users/{user}/recommendations", k=100, context="Toy Story animated toys")
    assert "1" not in ids(without)


HISTORY_REASONS = {"similar_to_history", "chosen_alongside"}  # item-item and sequence rows name history items


def test_a_dislike_is_not_a_purchase(api, admin):
    """On the demo catalog: a user whose only event is a dislike of Toy Story does not get the
    list a purchase of it gives, and no reason says they chose it."""
    run = uuid.uuid4().hex[:6]
    lists = {}
    for kind in ("purchase", "dislike"):
        user = f"{kind}-{run}"
        api.post("/events", {"events": [{"event_id": f"{user}-1", "user_id": user, "type": kind, "item_id": "1"}]})
        deadline = time.time() + 10
        while time.time() < deadline and admin.get(f"/users/{user}")[1]["consumed_count"] < 1:
            time.sleep(0.2)
        status, lists[kind] = api.get(f"/users/{user}/recommendations", k=10)
        assert status == 200 and len(lists[kind]["items"]) == 10
    assert any("1" in reason.get("items", []) for entry in lists["purchase"]["items"] for reason in entry["reasons"])
    assert len(set(ids(lists["purchase"])) & set(ids(lists["dislike"]))) <= 2
    assert "1" not in ids(lists["dislike"])
    assert not {r["type"] for entry in lists["dislike"]["items"] for r in entry["reasons"]} & HISTORY_REASONS


def test_reasons_name_the_history_items_and_the_context(api, stack):
    """Each item's reasons are its components over MIN_SHARE of its score: the history's for
    a user with 232 ratings, the context's when one is given. How far a context crowds the
    history out of the reasons depends on the blend the last release fitted (the context
    weighs 2.5x the collaborative weights), so the two are asked for apart."""
    rated = _rated_by("1")
    found = {}
    for context in (None, "space adventure"):
        status, body = api.get("/users/1/recommendations", k=10, **({"context": context} if context else {}))
        assert status == 200 and body["variant"] in {v.name for v in experiments.parse_variants(
            stack.environment_of("ApiFunction")["AB_VARIANTS"])}
        kinds = found[context] = set()
        for entry in body["items"]:
            assert entry["reasons"], entry
            for reason in entry["reasons"]:
                kinds.add(reason["type"])
                assert reason["text"] and 0 < reason["share"] <= 1
                if reason["type"] in HISTORY_REASONS:
                    assert reason["items"] and set(reason["items"]) <= rated, reason
                if reason["type"] == "context":
                    assert "space adventure" in reason["text"] and 0 < reason["similarity"] <= 1
    assert found[None] & HISTORY_REASONS and "context" not in found[None]
    assert "context" in found["space adventure"]


def _rated_by(user: str) -> set[str]:
    from model_build.data import read_interactions
    from tests.integration.conftest import DATA
    return {r.item_id for r in read_interactions(DATA) if r.user_id == user}


def test_rank_orders_the_given_items_and_reports_unknown_ones(api):
    given = ["1", "2", "no-such-item", "3", "bad id!", "1"]
    status, body = api.post("/users/1/rank", {"item_ids": given, "context": "toys"})
    assert status == 200 and body["unknown_item_ids"] == ["no-such-item", "bad id!"]
    assert sorted(ids(body)) == ["1", "2", "3"]
    scores = [e["score"] for e in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(e["reasons"] for e in body["items"])


def test_explore_marks_its_share_of_fresh_items(api):
    status, body = api.get("/users/1/recommendations", k=10, explore=0.3)
    explored = [e for e in body["items"] if e["explored"]]
    assert status == 200 and len(explored) == 3 and body["explore"] == 0.3
    for entry in explored:
        reason = entry["reasons"][0]
        assert reason["type"] == "explored" and reason["impressions"] <= selection.FRESH_MAX_IMPRESSIONS
    _, plain = api.get("/users/1/recommendations", k=10, explore=0)
    assert not any(e["explored"] for e in plain["items"])


def shown_counts(stack) -> dict[str, float]:
    """Every shard's impression counters in S3, summed: item id -> decayed impressions."""
    s3, bucket = stack.aws["s3"], stack.template.physical_name("ArtifactsBucket")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="popularity/").get("Contents", [])
    shards = [PopularityCounters.from_npz(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
              for o in listing]
    live = LivePopularity.combine(shards)
    return dict(zip(live.item_ids, live.impressions.tolist(), strict=True))


def test_served_lists_count_as_impressions_and_explore_then_prefers_items_not_shown(stack, api, movies):
    user, calls = f"shown-{uuid.uuid4().hex[:8]}", 25
    status, body = api.post("/events", {"events": [{"event_id": f"{user}-imp", "user_id": user,
                                                     "type": "impression", "item_ids": ["1", "2"]}]})
    assert status == 202 and body["accepted"] == 0 and "recorded by the API itself" in body["errors"][0]["message"]
    # The oldest year with 13-30 films: few enough that, were the shown items still fresh,
    # the explore pool (the 15 best-scored fresh ones) would hold them.
    years = Counter(m.attributes.get("year") for m in movies.values())
    year = min(y for y, n in years.items() if y is not None and 13 <= n <= 30)
    query = {"k": 10, "attributes": f"year:{year}"}

    lists = [ids(api.get(f"/users/{user}/recommendations", explore=0, **query)[1]) for _ in range(calls)]
    times = {item: sum(item in listed for listed in lists) for listed in lists for item in listed}
    always = {item for item, n in times.items() if n == calls}
    assert len(always) >= 5, "a cold user's list barely changes between calls"

    def counted() -> dict[str, float] | None:
        now = shown_counts(stack)
        return now if all(now.get(item, 0.0) >= calls - 0.01 for item in always) else None

    deadline, now = time.time() + 20, None
    while time.time() < deadline and (now := counted()) is None:
        time.sleep(0.2)
    assert now is not None, f"the popularity function counted {[shown_counts(stack).get(i) for i in always]}"
    assert all(now[item] > selection.FRESH_MAX_IMPRESSIONS for item in always)

    time.sleep(2 * POPULARITY_REFRESH_SECONDS)  # the API's catalog reads the counters at most this often
    status, body = api.get(f"/users/{user}/recommendations", explore=0.3, **query)
    explored = [e for e in body["items"] if e["explored"]]
    assert status == 200 and len(explored) == 3
    assert not {e["item_id"] for e in explored} & always, "explore skips the items shown 25 times"
    for entry in explored:
        reason = entry["reasons"][0]
        assert reason["type"] == "explored" and reason["impressions"] <= selection.FRESH_MAX_IMPRESSIONS
        assert now.get(entry["item_id"], 0.0) <= selection.FRESH_MAX_IMPRESSIONS


def test_diversity_spreads_the_list(api, catalog_index):
    def spread(body) -> float:
        vectors = np.stack([catalog_index.vector(i) for i in ids(body)])
        similarity = vectors @ vectors.T
        return float(similarity[np.triu_indices(len(vectors), 1)].mean())

    # Movies of the demo catalog only (items other tests add have no year up to 2018).
    years = {"min": "year:1900", "max": "year:2018"}
    _, focused = api.get("/users/1/recommendations", k=20, diversity=0, context="zombies", **years)
    _, diverse = api.get("/users/1/recommendations", k=20, diversity=0.8, context="zombies", **years)
    assert spread(diverse) < spread(focused) - 0.05


def test_erase_leaves_nothing_keyed_by_the_user(stack, api, admin):
    user = f"erase-me-{uuid.uuid4().hex[:6]}"
    _, fresh = admin.get(f"/users/fresh-{uuid.uuid4().hex[:6]}")
    _, listed = api.get(f"/users/{user}/recommendations", k=5)
    api.post("/events", {"events": [
        {"event_id": f"{user}-1", "user_id": user, "type": "click", "item_id": ids(listed)[0],
         "recommendation_id": listed["recommendation_id"]},
        {"event_id": f"{user}-2", "user_id": user, "type": "search", "query": "heist"}]})
    deadline = time.time() + 10
    while time.time() < deadline and admin.get(f"/users/{user}")[1]["event_count"] < 2:
        time.sleep(0.2)
    status, held = admin.get(f"/users/{user}")
    assert status == 200 and held["event_count"] == 2 and held["impressions"] == 1 and held["raw_event_objects"] == 1
    assert held["recent_items"] == [ids(listed)[0]] and held["top_categories"]

    status, erased = admin.delete(f"/users/{user}")
    assert status == 200 and erased["removed"] == {"profiles": 1, "dedupe_records": 2, "raw_event_objects": 1,
                                                   "impressions": 1}
    aws = stack.aws
    for logical_id in stack.template.of_type("AWS::DynamoDB::Table"):
        table = stack.template.physical_name(logical_id)
        for page in aws["dynamodb"].get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                if {"S": user} in item.values():  # the tombstone alone: who and when, for 15 days
                    assert logical_id == "ProfilesTable" and set(item) == {"user_id", "erased_at", "expires_at",
                                                                           "version"}, (logical_id, item)
    for logical_id in stack.template.of_type("AWS::S3::Bucket"):
        bucket = stack.template.physical_name(logical_id)
        keys = [o["Key"] for page in aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]
        assert not [k for k in keys if user in k], logical_id
    _, after = admin.get(f"/users/{user}")
    assert after["erased_at"] is not None and fresh["erased_at"] is None
    assert {k: v for k, v in after.items() if k not in ("user_id", "variant", "erased_at")} == \
        {k: v for k, v in fresh.items() if k not in ("user_id", "variant", "erased_at")}
    assert admin.delete(f"/users/{user}")[1]["removed"] == {"profiles": 0, "dedupe_records": 0,
                                                            "raw_event_objects": 0, "impressions": 0}


def test_metrics_count_a_scripted_session_exactly(stack, api, admin):
    variants = experiments.parse_variants(stack.environment_of("ApiFunction")["AB_VARIANTS"])
    tag = uuid.uuid4().hex[:6]
    ana, bo = f"ana-{tag}", f"bo-{tag}"
    day = datetime.now(UTC).date().isoformat()

    def counters() -> dict[str, dict]:
        status, body = admin.get("/metrics", **{"from": day, "to": day})
        assert status == 200
        return {row["variant"]: row for row in body["days"]}

    before = counters()
    lists = [api.get(f"/users/{ana}/recommendations", k=5)[1] for _ in range(4)]
    other = api.get(f"/users/{bo}/recommendations", k=5)[1]
    first, second = lists[0], lists[1]

    def event(n, kind, item, rid):
        return {"event_id": f"{ana}-{n}", "user_id": ana, "type": kind, "item_id": item,
                **({"recommendation_id": rid} if rid else {})}

    script = [event(1, "click", ids(first)[0], first["recommendation_id"]),
              event(2, "click", ids(first)[1], first["recommendation_id"]),
              event(3, "click", ids(second)[0], second["recommendation_id"]),
              event(4, "purchase", ids(first)[0], first["recommendation_id"]),
              event(5, "click", ids(other)[0], other["recommendation_id"]),   # bo's list: not ana's
              event(6, "click", "no-such-item", first["recommendation_id"]),   # not in the list
              event(7, "click", ids(first)[2], None),                           # not attributed
              event(8, "view", ids(first)[3], first["recommendation_id"])]      # a view is neither
    assert api.post("/events", {"events": script})[1]["accepted"] == len(script)
    assert api.post("/events", {"events": script[:2]})[1]["accepted"] == 2      # redelivered: counted once
    expected = {v.name: {"impressions": 0, "clicks": 0, "conversions": 0} for v in variants}
    expected[experiments.assign(ana, variants).name].update(impressions=4, clicks=3, conversions=1)
    expected[experiments.assign(bo, variants).name]["impressions"] += 1

    def delta() -> dict[str, dict]:
        now = counters()
        return {v: {c: now.get(v, {}).get(c, 0) - before.get(v, {}).get(c, 0)
                    for c in ("impressions", "clicks", "conversions")} for v in expected}

    deadline = time.time() + 15
    while time.time() < deadline and delta() != expected:
        time.sleep(0.3)
    time.sleep(1.0)  # nothing more may arrive
    assert delta() == expected
    session = expected[experiments.assign(ana, variants).name]
    if experiments.assign(ana, variants).name != experiments.assign(bo, variants).name:
        assert (session["clicks"] / session["impressions"], session["conversions"] / session["impressions"]) \
            == (0.75, 0.25)
    row = counters()[experiments.assign(ana, variants).name]
    assert row["ctr"] == round(row["clicks"] / row["impressions"], 6)
    assert row["conversion_rate"] == round(row["conversions"] / row["impressions"], 6)


# ---- retiring an item ----------------------------------------------------------------

RETIRED_WITHIN_SECONDS = 2.0  # the live catalog reads the items table's changes at most once a second
BACK_WITHIN_SECONDS = 8.0  # a re-PUT item lists again once the catalog function has encoded it


def _where_listed(api, item: str, anchor: str, user: str, title: str) -> set[str]:
    """The routes whose list holds the item (recommendations with and without exploration,
    similar items of an anchor, rank, trending); "similar" of the item itself while it answers."""
    found = set()
    for name, query in (("recommendations", {}), ("explored", {"explore": 1.0}), ("diverse", {"diversity": 0.5})):
        status, body = api.get(f"/users/{user}/recommendations", k=100, context=title, **query)
        if status == 200 and item in ids(body):
            found.add(name)
    status, body = api.get(f"/items/{anchor}/similar", k=100)
    if status == 200 and item in ids(body):
        found.add("similar")
    status, body = api.post(f"/users/{user}/rank", {"item_ids": [item, anchor]})
    if status == 200 and item in ids(body):
        found.add("rank")
    status, body = api.get("/trending", k=100)
    if status == 200 and item in ids(body):
        found.add("trending")
    if api.get(f"/items/{item}/similar", k=5)[0] == 200:
        found.add("own similar")
    return found


def _wait(check, seconds: float, interval: float = 0.1):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_a_deleted_or_unavailable_item_leaves_every_list_within_2_s_and_comes_back(api, admin):
    item, user = f"retire-{uuid.uuid4().hex[:8]}", f"retire-fan-{uuid.uuid4().hex[:8]}"
    body = {"title": "Midnight Harbour Ghost Ship", "description": "A ghost ship drifts into a fishing harbour at "
            "midnight and the sailors who board it do not come back.", "categories": ["Horror"],
            "tags": ["ghost ship", "sea"]}
    # (an explored slot is a random draw: its absence is checked after, not its presence before)
    everywhere = {"recommendations", "diverse", "similar", "rank", "trending", "own similar"}
    assert admin.put(f"/items/{item}", body)[0] == 200
    encoded = _wait(lambda: (r := api.get(f"/items/{item}/similar", k=1))[0] == 200 and r, BACK_WITHIN_SECONDS)
    assert encoded, f"{item} was not encoded within {BACK_WITHIN_SECONDS} s"
    anchor = ids(encoded[1])[0]
    buyers = [{"event_id": f"{item}-{n}", "user_id": f"{user}-{n}", "type": "purchase", "item_id": item}
              for n in range(3)]
    assert api.post("/events", {"events": [*buyers, {"event_id": f"{item}-u", "user_id": user, "type": "click",
                                                      "item_id": anchor}]})[0] == 202
    listed = _wait(lambda: everywhere <= (w := _where_listed(api, item, anchor, user, body["title"])) and w,
                   20.0, 0.5)  # trending waits for the popularity function and the 2 s counter refresh
    assert listed and everywhere <= listed, listed

    def retired_within_2_s(retire) -> None:
        assert retire()
        time.sleep(RETIRED_WITHIN_SECONDS - 0.8)  # past one refresh interval: the check starts before 2 s are up
        where = _where_listed(api, item, anchor, user, body["title"])
        assert where == set(), where
        answer = api.post(f"/users/{user}/rank", {"item_ids": [item, anchor]})[1]
        assert answer["unavailable_item_ids"] == [item] and ids(answer) == [anchor]

    def comes_back() -> None:
        assert admin.put(f"/items/{item}", body)[0] == 200
        back = _wait(lambda: {"recommendations", "similar", "own similar"} <= _where_listed(
            api, item, anchor, user, body["title"]), BACK_WITHIN_SECONDS, 0.3)
        assert back, f"{item} did not come back within {BACK_WITHIN_SECONDS} s"

    retired_within_2_s(lambda: admin.delete(f"/items/{item}") == (200, {"item_id": item, "deleted": True}))
    assert admin.delete(f"/items/{item}") == (200, {"item_id": item, "deleted": True}), "idempotent"
    assert api.get(f"/items/{item}")[0] == 404 and admin.delete(f"/items/never-{item}")[0] == 404
    assert item in admin.get(f"/users/{user}-0")[1]["recent_items"], "its events stay in the user's history"
    comes_back()

    retired_within_2_s(lambda: admin.put(f"/items/{item}", {**body, "available": False})[0] == 200)
    status, stored = api.get(f"/items/{item}")
    assert status == 200 and stored["available"] is False
    comes_back()


def test_schemathesis_finds_no_server_error_over_every_method(stack, tmp_path):
    """The schemathesis CLI, 30 examples per operation, every phase (its coverage phase also
    sends the methods an operation lacks, TRACE among them): no 5xx anywhere."""
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("schemathesis")
    started = time.monotonic()
    run = subprocess.run([str(cli), "run", f"{stack.url}/openapi.json", "-H", f"x-api-key: {API_KEY}",
                          "--checks", "not_a_server_error", "--max-examples", "30", "--seed", "1", "--workers", "1",
                          "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    assert run.returncode == 0, f"{took:.0f} s\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"


def test_after_the_fuzzing_a_normal_user_is_served_and_their_events_apply_within_2_s(api, admin):
    """Last in this module: schemathesis' thousands of requests left the stack serving."""
    from tests.integration.test_hostile import still_serves
    still_serves(api, admin)
