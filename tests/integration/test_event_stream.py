"""The events path: exactly-once effect under redelivery (profiles, raw events, popularity
counters), poison records, concurrent writers, and live popularity over HTTP."""
from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from local_stack.client import ApiClient
from recsys.popularity import PopularityCounters


def profile_item(stack, user: str) -> dict | None:
    table = stack.template.physical_name("ProfilesTable")
    return stack.aws["dynamodb"].get_item(TableName=table, Key={"user_id": {"S": user}},
                                          ConsistentRead=True).get("Item")


def raw_events(stack, user: str) -> dict[str, bytes]:
    """The user's raw event log: object key -> body."""
    s3, bucket = stack.aws["s3"], stack.template.physical_name("RawEventsBucket")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"events/user={user}/").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def event(user: str, n: int, **fields) -> dict:
    return {"event_id": f"{user}-{n}", "user_id": user, "type": "click", "item_id": str(n % 50 + 1),
            "dwell_seconds": 30, "timestamp": time.time() - 10_000 + n, **fields}


def popularity_object(stack, shard: str) -> tuple[str, bytes]:
    """The shard's popularity counters in S3: ETag and bytes."""
    s3, bucket = stack.aws["s3"], stack.template.physical_name("ArtifactsBucket")
    stored = s3.get_object(Bucket=bucket, Key=f"popularity/{shard}.npz")
    return stored["ETag"], stored["Body"].read()


def kinesis_batch(stack, events: list[dict], raw: dict[int, bytes] | None = None, shard: str = "shardId-0") -> dict:
    """A Lambda Kinesis event as the mapping delivers it (payloads optionally replaced)."""
    raw = raw or {}
    stream = stack.template.get_att("EventsStream", "Arn")
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": e["user_id"], "sequenceNumber": str(90000 + n),
                    "data": base64.b64encode(raw.get(n, json.dumps(e).encode())).decode(),
                    "approximateArrivalTimestamp": time.time()},
        "eventSource": "aws:kinesis", "eventName": "aws:kinesis:record", "eventID": f"{shard}:{90000 + n}",
        "awsRegion": "us-east-1", "eventSourceARN": stream} for n, e in enumerate(events)]}


def test_replaying_a_batch_leaves_profiles_raw_events_and_counters_byte_identical(stack):
    users = [f"replay-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    shard = f"shardId-replay-{uuid.uuid4().hex[:6]}"  # a shard of its own: no other test writes its counters
    events = [event(users[n % 3], n) for n in range(60)]
    batch = kinesis_batch(stack, events, shard=shard)
    events_function, popularity_function = stack.pools["EventsFunction"], stack.pools["PopularityFunction"]
    assert events_function.invoke(batch) == {"batchItemFailures": []}
    assert popularity_function.invoke(batch)["counted"] == 60
    state = lambda: ({u: (profile_item(stack, u), raw_events(stack, u)) for u in users},  # noqa: E731
                     popularity_object(stack, shard))
    before = state()
    assert all(int(profile["event_count"]["N"]) == 20 and len(raw) == 1 for profile, raw in before[0].values())
    assert events_function.invoke(batch) == {"batchItemFailures": []}
    assert popularity_function.invoke(batch) == {"records": 60, "counted": 0, "invalid": 0, "already_applied": 60}
    assert state() == before
    # The same events again under new sequence numbers (a client resending, a redrive): still counted once.
    resent = kinesis_batch(stack, events, shard=shard)
    for n, record in enumerate(resent["Records"]):
        record["kinesis"]["sequenceNumber"] = str(95000 + n)
    assert popularity_function.invoke(resent)["counted"] == 0
    assert popularity_object(stack, shard) == before[1], "nothing counted, nothing written"
    counters = PopularityCounters.from_npz(before[1][1])
    assert counters.watermark == "90059"
    assert sorted(counters.item_ids) == sorted({e["item_id"] for e in events})


def test_impressions_pass_the_events_function_by_and_count_once_in_the_counters(stack):
    viewer, watcher = f"viewer-{uuid.uuid4().hex[:6]}", f"watcher-{uuid.uuid4().hex[:6]}"
    shard = f"shardId-shown-{uuid.uuid4().hex[:6]}"
    shown = [{"event_id": f"rec-{viewer}-{n}", "user_id": viewer, "type": "impression",
              "item_ids": ["1", "2", str(3 + n)], "timestamp": time.time() - 100 + n} for n in range(3)]
    events = [*shown, event(watcher, 7), {**shown[0], "user_id": watcher, "event_id": f"rec-{watcher}"}]
    batch = kinesis_batch(stack, events, shard=shard)
    assert stack.pools["EventsFunction"].invoke(batch) == {"batchItemFailures": []}
    assert profile_item(stack, viewer) is None and raw_events(stack, viewer) == {}, "no profile, nothing logged"
    assert int(profile_item(stack, watcher)["event_count"]["N"]) == 1
    [logged] = raw_events(stack, watcher).values()
    assert b"impression" not in logged

    popularity_function = stack.pools["PopularityFunction"]
    assert popularity_function.invoke(batch)["counted"] == 5
    etag, stored = popularity_object(stack, shard)
    counters = PopularityCounters.from_npz(stored)
    shown_times = dict(zip(counters.item_ids, counters.impressions.tolist(), strict=True))
    assert shown_times == pytest.approx({"1": 4.0, "2": 4.0, "3": 2.0, "4": 1.0, "5": 1.0, "8": 0.0}, abs=1e-3)
    assert popularity_function.invoke(batch)["already_applied"] == 5
    for n, record in enumerate(batch["Records"]):
        record["kinesis"]["sequenceNumber"] = str(96000 + n)
    assert popularity_function.invoke(batch)["counted"] == 0, "the same lists again count once"
    assert popularity_object(stack, shard)[1] == stored


def test_one_poison_record_among_100_is_dead_lettered_with_its_reason(stack):
    user = f"poison-{uuid.uuid4().hex[:6]}"
    events = [event(user, n) for n in range(100)]
    batch = kinesis_batch(stack, events, raw={37: b"{not json at all"})
    queue = stack.aws["sqs"].get_queue_url(QueueName=stack.template.physical_name("EventsDeadLetterQueue"))["QueueUrl"]
    assert stack.pools["EventsFunction"].invoke(batch) == {"batchItemFailures": []}
    assert int(profile_item(stack, user)["event_count"]["N"]) == 99
    messages = []
    for _ in range(10):
        received = stack.aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages += [json.loads(m["Body"]) for m in received.get("Messages", [])]
        ours = [m for m in messages if m.get("sequenceNumber") == "90037"]
        if ours:
            break
    assert len(ours) == 1 and ours[0]["condition"] == "InvalidRecord"
    assert base64.b64decode(ours[0]["data"]) == b"{not json at all" and "Expecting property name" in ours[0]["reason"]


def test_one_record_the_domain_cannot_apply_among_1000_is_parked_and_the_shard_moves_on(stack):
    """A valid event for a user whose stored profile is corrupt (an applied-events field of 7
    bytes, as a bad write or an old format would leave it): the record is dead-lettered with
    the reason in the same invocation, and every other event is applied in it: nothing is
    left for the mapping to retry, so no later record waits on it."""
    run = uuid.uuid4().hex[:6]
    corrupt = f"corrupt-{run}"
    stack.aws["dynamodb"].put_item(TableName=stack.template.physical_name("ProfilesTable"), Item={
        "user_id": {"S": corrupt}, "applied_events": {"B": b"\x01" * 7}, "version": {"N": "1"}})
    events = [event(f"many-{run}-{n % 200}", n) for n in range(1000)]
    events[500] = event(corrupt, 500)
    started = time.perf_counter()
    assert stack.pools["EventsFunction"].invoke(kinesis_batch(stack, events)) == {"batchItemFailures": []}
    elapsed = time.perf_counter() - started
    assert all(int(profile_item(stack, f"many-{run}-{u}")["event_count"]["N"]) == (5 if u != 100 else 4)
               for u in range(0, 200, 20))
    queue = stack.aws["sqs"].get_queue_url(QueueName=stack.template.physical_name("EventsDeadLetterQueue"))["QueueUrl"]
    ours: list[dict] = []
    for _ in range(20):
        received = stack.aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        ours += [m for m in map(lambda m: json.loads(m["Body"]), received.get("Messages", []))
                 if m.get("sequenceNumber") == "90500"]
        if ours:
            break
    assert len(ours) == 1 and "buffer size must be a multiple" in ours[0]["reason"], ours
    assert json.loads(base64.b64decode(ours[0]["data"]))["user_id"] == corrupt
    print(f"1,000 records, one poison: applied in one invocation of {elapsed:.2f} s")


@pytest.mark.parametrize("writers,events_each", [(8, 200)])
def test_concurrent_writers_on_one_user_count_every_event_once(stack, writers, events_each):
    from recsys.settings import Settings
    from recsys.wiring import event_ingestor

    ingestor = event_ingestor(Settings.from_env(stack.environment_of("EventsFunction")))
    user = f"contended-{uuid.uuid4().hex[:6]}"

    def writer(w: int) -> dict:
        failures = {}
        for start in range(0, events_each, 20):
            records = {f"{w}-{n}": json.dumps(event(user, w * events_each + n)).encode()
                       for n in range(start, start + 20)}
            failures.update(ingestor.apply(records))
        return failures

    with ThreadPoolExecutor(max_workers=writers) as pool:
        failures = [f for result in pool.map(writer, range(writers)) for f in result]
    assert failures == []
    assert int(profile_item(stack, user)["event_count"]["N"]) == writers * events_each


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def test_events_posted_over_http_move_trending_and_cold_users_within_seconds(api: ApiClient, admin: ApiClient):
    tag = uuid.uuid4().hex[:8]
    item, category = f"live-{tag}", f"Testgenre{tag}"
    status, _ = admin.put(f"/items/{item}", {"title": f"Night of the Living Counters {tag}",
                                           "description": "A zombie film nobody has seen yet.",
                                           "categories": ["Horror", category]})
    assert status == 200
    wait_for(lambda: api.get(f"/items/{item}/similar", k=1)[0] == 200, 60, "the new item encoded and served")
    cold_user = f"cold-{tag}"
    status, before = api.get(f"/users/{cold_user}/recommendations", k=10)
    assert status == 200 and item not in [e["item_id"] for e in before["items"]]
    status, body = api.get("/trending", category=category)
    assert (status, body) == (200, {"category": category, "items": []})

    posted = time.monotonic()
    status, body = api.post("/events", {"events": [
        {"event_id": f"{tag}-{n}", "user_id": f"buyer-{tag}-{n}", "type": "purchase", "item_id": item}
        for n in range(30)]})
    assert (status, body) == (202, {"accepted": 30, "errors": []})
    trending = wait_for(lambda: api.get("/trending", category=category, k=5)[1]["items"], 15,
                        "the item trending in its category")
    seconds = time.monotonic() - posted
    assert [e["item_id"] for e in trending] == [item]
    print(f"event -> /trending in {seconds:.2f} s")
    status, body = api.get("/trending", k=3)
    assert status == 200 and item in [e["item_id"] for e in body["items"]]
    status, after = api.get(f"/users/{cold_user}/recommendations", k=10)
    assert status == 200 and item in [e["item_id"] for e in after["items"]][:3]
    status, body = api.get("/trending", k=0)
    assert status == 400 and body["error"]["message"].startswith("k: ")


def test_two_writers_of_one_shard_never_overwrite_each_other(stack):
    """Lambda runs one batch per shard at a time; should two ever hold a shard, the
    conditional put makes the stale one re-read and fold its batch again."""
    from recsys.settings import Settings
    from recsys.wiring import popularity_counter

    settings = Settings.from_env(stack.environment_of("PopularityFunction"))
    first, second = popularity_counter(settings), popularity_counter(settings)
    shard, user = f"shardId-writers-{uuid.uuid4().hex[:6]}", f"writer-{uuid.uuid4().hex[:6]}"

    def batch(start: int) -> list[tuple[str, bytes]]:
        return [(str(start + n), json.dumps(event(user, start + n, type="purchase", item_id="1")).encode())
                for n in range(10)]

    assert first.apply(shard, batch(100))["counted"] == 10
    assert second.apply(shard, batch(200))["counted"] == 10  # reads what the first wrote
    assert first.apply(shard, batch(300))["counted"] == 10  # its copy is stale: the put fails, it re-reads
    counters = PopularityCounters.from_npz(popularity_object(stack, shard)[1])
    assert counters.watermark == "309" and len(counters.remembered) == 30
    assert counters.item_ids == ["1"] and counters.popular[0] > 29 * 3.0
