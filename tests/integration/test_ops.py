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
    put = stack.aws["kinesis"].put_records(StreamName=settings.events_stream, Records=[
        {"Data": json.dumps(e).encode(), "PartitionKey": user} for e in events[:2]])
    assert wait_for_event_count(stack, user, 2) == 2
    sqs = stack.aws["sqs"]
    # What the mapping sends after retries, for the two records above...
    sequence = [r["SequenceNumber"] for r in put["Records"]]
    sqs.send_message(QueueUrl=settings.events_dead_letter_queue, MessageBody=json.dumps({"KinesisBatchInfo": {
        "shardId": put["Records"][0]["ShardId"], "startSequenceNumber": sequence[0],
        "endSequenceNumber": sequence[1], "streamArn": stack.template.get_att("EventsStream", "Arn")}}))
    # ...and what the function dead-letters itself (a record refused by an older version).
    sqs.send_message(QueueUrl=settings.events_dead_letter_queue, MessageBody=json.dumps({
        "condition": "InvalidRecord", "reason": "fixed since", "sequenceNumber": "1",
        "data": base64.b64encode(json.dumps(events[2]).encode()).decode()}))

    result = commands.redrive(settings)
    assert result["records"] >= 3
    assert wait_for_event_count(stack, user, 3) == 3
    time.sleep(1.0)
    assert int(profile_item(stack, user)["event_count"]["N"]) == 3, "replayed records must not count twice"


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
    assert profile_item(stack, user) is None and raw_events(stack, user) == {}
    assert commands.erase_user(settings, user) == {"profiles": 0, "dedupe_records": 0, "raw_event_objects": 0,
                                                   "impressions": 0}
