"""Operations on the running stack: redrive the dead-letter queue, export events, erase a user."""
from __future__ import annotations

import base64
import csv
import json
import time
import uuid

from ops import commands
from recsys.settings import Settings
from tests.integration.test_event_stream import profile_item, raw_events


def settings_of(stack) -> Settings:
    environment = {**stack.environment_of("EventsFunction"), **stack.environment_of("ApiFunction")}
    return Settings.from_env(environment)


def wait_for_event_count(stack, user: str, expected: int, seconds: float = 20.0) -> int:
    deadline, count = time.time() + seconds, 0
    while time.time() < deadline:
        item = profile_item(stack, user)
        count = int(item["event_count"]["N"]) if item else 0
        if count >= expected:
            break
        time.sleep(0.1)
    return count


def test_redrive_reingests_refused_records_and_replays_batches_without_double_counting(stack):
    settings = settings_of(stack)
    user = f"redrive-{uuid.uuid4().hex[:6]}"
    events = [{"event_id": f"{user}-{n}", "user_id": user, "type": "view", "item_id": str(n + 1),
               "timestamp": time.time() - 100 + n} for n in range(3)]
    invalid = json.dumps({"event_id": f"{user}-bad", "user_id": user, "type": "teleport"}).encode()
    put = stack.aws["kinesis"].put_records(StreamName=settings.events_stream, Records=[
        {"Data": json.dumps(e).encode(), "PartitionKey": user} for e in events[:2]] + [
        {"Data": invalid, "PartitionKey": user}])
    assert wait_for_event_count(stack, user, 2) == 2
    sqs = stack.aws["sqs"]
    # What the mapping sends after retries, for the three records above...
    sequence = [r["SequenceNumber"] for r in put["Records"]]
    sqs.send_message(QueueUrl=settings.events_dead_letter_queue, MessageBody=json.dumps({"KinesisBatchInfo": {
        "shardId": put["Records"][0]["ShardId"], "startSequenceNumber": sequence[0],
        "endSequenceNumber": sequence[2], "streamArn": stack.template.get_att("EventsStream", "Arn")}}))
    # ...what the function dead-letters itself (a record refused by an older version)...
    sqs.send_message(QueueUrl=settings.events_dead_letter_queue, MessageBody=json.dumps({
        "condition": "InvalidRecord", "reason": "fixed since", "sequenceNumber": "1",
        "data": base64.b64encode(json.dumps(events[2]).encode()).decode()}))
    # ...and a record still invalid, which must stay parked instead of going round again.
    sqs.send_message(QueueUrl=settings.events_dead_letter_queue, MessageBody=json.dumps({
        "condition": "InvalidRecord", "reason": "unknown type", "sequenceNumber": "2",
        "data": base64.b64encode(invalid).decode()}))

    result = commands.redrive(settings)
    assert result["records"] >= 3 and result["still_invalid"] >= 2
    assert wait_for_event_count(stack, user, 3) == 3
    time.sleep(1.0)
    assert int(profile_item(stack, user)["event_count"]["N"]) == 3, "replayed records must not count twice"
    # The batch's invalid record was parked again as a message of its own, with the reason.
    parked = []
    for _ in range(10):
        received = sqs.receive_message(QueueUrl=settings.events_dead_letter_queue, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        parked += [json.loads(m["Body"]) for m in received]
        if any("sequenceNumber" not in m and m.get("data") == base64.b64encode(invalid).decode() for m in parked):
            break
    assert any("sequenceNumber" not in m and m.get("data") == base64.b64encode(invalid).decode()
               and "type must be one of" in m["reason"] for m in parked), parked


def test_export_then_erase_a_user(stack, api, tmp_path):
    settings = settings_of(stack)
    user = f"erase-{uuid.uuid4().hex[:6]}"
    status, body = api.post("/events", {"events": [
        {"event_id": f"{user}-1", "user_id": user, "type": "rating", "item_id": "1", "value": 4.5},
        {"event_id": f"{user}-2", "user_id": user, "type": "search", "query": "heist films"}]})
    assert status == 202 and body["accepted"] == 2
    assert wait_for_event_count(stack, user, 2) == 2

    out = tmp_path / "events.csv"
    assert commands.export_events(settings, out)["events"] >= 2
    with open(out, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["user_id"] == user]
    assert sorted((r["type"], r["item_id"], r["rating"], r["query"]) for r in rows) == [
        ("rating", "1", "4.5", ""), ("search", "", "", "heist films")]

    erased = commands.erase_user(settings, user)
    assert erased == {"profiles": 1, "dedupe_records": 2, "raw_event_objects": 1, "impressions": 0}
    assert set(profile_item(stack, user)) == {"user_id", "erased_at", "expires_at", "version"}, "a tombstone alone"
    assert raw_events(stack, user) == {}
    assert commands.erase_user(settings, user) == {"profiles": 0, "dedupe_records": 0, "raw_event_objects": 0,
                                                   "impressions": 0}


def test_batch_recommendations_are_the_served_lists(stack, api, tmp_path):
    """`ops batch-recommendations` ranks with the serving code: for the demo's users, its
    lists are what GET /users/{id}/recommendations returns, and they go to S3 too."""
    settings = settings_of(stack)
    users = tmp_path / "users.txt"
    users.write_text("1\n2\n\n3\n")
    served = {user: api.get(f"/users/{user}/recommendations", k=10) for user in ("1", "2", "3")}
    out = tmp_path / "lists.jsonl"
    result = commands.batch_recommendations(settings, str(out), k=10, users=users)
    assert result["users"] == 3 and result["release"] is not None
    lists = [json.loads(line) for line in out.read_text().splitlines()]
    assert [entry["user_id"] for entry in lists] == ["1", "2", "3"]
    for entry in lists:
        status, body = served[entry["user_id"]]
        assert status == 200 and len(entry["items"]) == 10
        assert [i["item_id"] for i in entry["items"]] == [i["item_id"] for i in body["items"]]
        assert all(item["reasons"] for item in entry["items"])

    url = f"s3://{settings.artifacts_bucket}/batch/lists.jsonl"
    assert commands.batch_recommendations(settings, url, k=5, users=users)["users"] == 3
    from recsys.adapters.aws import aws_client
    body = aws_client("s3", settings.region, settings.endpoint_url).get_object(
        Bucket=settings.artifacts_bucket, Key="batch/lists.jsonl")["Body"].read().decode()
    assert [len(json.loads(line)["items"]) for line in body.splitlines()] == [5, 5, 5]


def test_batch_recommendations_cover_every_profile_without_recording_impressions(stack, tmp_path):
    settings = settings_of(stack)
    from recsys.adapters.profiles import ProfileRepository
    profiled = set(ProfileRepository(settings).user_ids())
    before = stack_impressions(stack)
    result = commands.batch_recommendations(settings, str(tmp_path / "all.jsonl"), k=3)
    # A corrupt stored profile (tests/integration/test_event_stream.py leaves one) gets no list.
    assert result["users"] + len(result["unreadable"]) == len(profiled) >= 610
    assert all(user.startswith("corrupt-") for user in result["unreadable"])
    listed = {json.loads(line)["user_id"] for line in (tmp_path / "all.jsonl").read_text().splitlines()}
    assert listed == profiled - set(result["unreadable"])
    assert stack_impressions(stack) == before, "batch lists are not impressions"


def stack_impressions(stack) -> int:
    from recsys.adapters.aws import aws_client
    settings = settings_of(stack)
    pages = aws_client("dynamodb", settings.region, settings.endpoint_url).get_paginator("scan").paginate(
        TableName=settings.impressions_table, Select="COUNT")
    return sum(page["Count"] for page in pages)


def test_an_item_added_through_the_api_survives_a_release(stack, admin, api, tmp_path):
    """`make release` (ops release): the release is built from the live catalog, so an item
    PUT through the API is in it with its vector, and the API switches to it without a
    restart."""
    from recsys.adapters.artifacts import S3Releases
    from recsys.index import ItemIndex
    from recsys.release import ITEM_VECTORS

    settings = settings_of(stack)
    item_id = f"live-{uuid.uuid4().hex[:6]}"
    body = {"title": "Zombie Harbour", "description": "Survivors hold a fishing town against the undead.",
            "categories": ["Horror"], "attributes": {"year": 2026}}
    assert admin.put(f"/items/{item_id}", body)[0] == 200
    deadline = time.time() + 30
    while api.get(f"/items/{item_id}/similar", k=3)[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert api.get(f"/items/{item_id}/similar", k=3)[0] == 200, "the catalog function encoded the item"

    published = commands.release(settings, work=tmp_path / "release")
    assert published["exported_items"] >= 9_743 and published["events"] > 0
    releases = S3Releases(settings)
    assert releases.current() == published["release"]
    index, _ = ItemIndex.from_npz(releases.read(published["release"], ITEM_VECTORS))
    assert item_id in index.rows and index.attributes[index.rows[item_id]] == {"year": 2026}
    assert float(index.vector(item_id) @ index.vector("1")) < 0.99, "its own vector, not a placeholder"

    deadline = time.time() + 45  # warm functions read the pointer every RELEASE_CHECK_SECONDS (30 s)
    while api.get("/health")[1].get("release") != published["release"] and time.time() < deadline:
        time.sleep(0.5)
    assert api.get("/health")[1]["release"] == published["release"]
    status, similar = api.get(f"/items/{item_id}/similar", k=5)
    assert status == 200 and len(similar["items"]) == 5
    status, listed = api.get(f"/users/{item_id}-fan/recommendations", k=10, context="zombies holding a harbour town")
    assert status == 200 and item_id in [i["item_id"] for i in listed["items"]]


def test_a_profile_of_another_encoder_is_served_then_refolded_from_its_raw_events(stack, api):
    """After a release that changes the encoder (issue #13): a stored profile whose vectors
    are another encoder's (another dimension here) still gets lists, from its item history;
    `ops refold-profiles` folds its vectors again from the raw event log, in this encoder's
    space, to what the events function had folded live."""
    import numpy as np

    from recsys.adapters.profiles import ProfileRepository

    settings, user = settings_of(stack), "7"
    profiles = ProfileRepository(settings)
    live = profiles.get(user)
    encoder_version = api.get("/health")[1]["model_version"]
    assert live is not None and live.long_term is not None and live.encoder_version == encoder_version
    folded_live = live.long_term.copy()
    rng = np.random.default_rng(0)
    live.long_term = (lambda v: v / np.linalg.norm(v))(rng.normal(size=512)).astype(np.float32)
    live.encoder_version = "an-earlier-512-d-encoder"
    profiles.save(live)

    status, listed = api.get(f"/users/{user}/recommendations", k=10)
    assert status == 200 and len(listed["items"]) == 10, listed

    result = commands.refold_profiles(settings, [user])
    assert result["profiles"] == 1 and result["encoder"] == encoder_version
    assert result["events"] >= live.event_count
    refolded = profiles.get(user)
    assert refolded.encoder_version == encoder_version and refolded.long_term.shape == folded_live.shape
    assert float(refolded.long_term @ folded_live) > 0.999
    assert refolded.history == live.history and refolded.event_count == live.event_count
