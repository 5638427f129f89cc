"""The events path under failure: a poison record is dead-lettered alone, nothing else is lost."""
from __future__ import annotations

import json
import time
import uuid


def profile_event_count(stack, user: str) -> int:
    table = stack.template.physical_name("ProfilesTable")
    item = stack.aws["dynamodb"].get_item(TableName=table, Key={"user_id": {"S": user}}, ConsistentRead=True)
    return int(item["Item"]["event_count"]["N"]) if "Item" in item else 0


def test_a_poison_record_goes_to_the_dead_letter_queue_alone(stack):
    user = f"poison-{uuid.uuid4().hex[:6]}"
    stream = stack.template.physical_name("EventsStream")
    good = [{"event_id": f"{user}-{i}", "user_id": user, "type": "view", "item_id": str(i + 1),
             "timestamp": time.time()} for i in range(3)]
    records = [{"Data": json.dumps(e).encode(), "PartitionKey": user} for e in good]
    records.append({"Data": b"this is not an event", "PartitionKey": user})
    kinesis = stack.aws["kinesis"]
    put = kinesis.put_records(StreamName=stream, Records=records)
    poison_sequence = put["Records"][-1]["SequenceNumber"]
    queue = stack.aws["sqs"].get_queue_url(QueueName=stack.template.physical_name("EventsDeadLetterQueue"))["QueueUrl"]

    messages, deadline = [], time.time() + 30
    while not messages and time.time() < deadline:
        messages = stack.aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
    assert messages, "the poison record never reached the dead-letter queue"
    failure = json.loads(messages[0]["Body"])
    batch = failure["KinesisBatchInfo"]
    assert batch["startSequenceNumber"] == batch["endSequenceNumber"] == poison_sequence
    assert batch["batchSize"] == 1 and batch["streamArn"].endswith(stream)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 4  # the first try and 3 retries
    assert profile_event_count(stack, user) == 3


def test_concurrent_writers_never_lose_a_profile_update(stack):
    """Optimistic locking: 4 writers x 25 read-modify-writes on one profile, all counted."""
    from concurrent.futures import ThreadPoolExecutor

    from recsys.events import Event
    from recsys.profile import apply_events
    from recsys.settings import Settings
    from recsys.storage import ProfileRepository

    profiles = ProfileRepository(Settings.from_env(stack.environment_of("EventsFunction")))
    user = f"contended-{uuid.uuid4().hex[:6]}"

    def writer(n: int) -> None:
        for i in range(25):
            event = Event(event_id=f"{n}-{i}", user_id=user, type="view", timestamp=time.time(), item_id=f"{n}-{i}")
            profiles.update(user, lambda profile, event=event: apply_events(profile, [event], lambda _: None))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(writer, range(4)))
    profile = profiles.get(user)
    assert profile.event_count == 100 and len(profile.consumed) == 100
