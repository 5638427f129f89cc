"""What each ops command does, as functions the tests call too."""
from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

from recsys import privacy
from recsys.adapters.aws import aws_client
from recsys.adapters.events import RawEventLog
from recsys.adapters.profiles import ProfileRepository
from recsys.adapters.tracking import ImpressionStore
from recsys.settings import Settings

EXPORT_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "type", "event_id", "dwell_seconds", "query")


def redrive(settings: Settings) -> dict[str, int]:
    """Puts every dead-lettered event back on the events stream, then deletes its message.

    Two kinds of message: records the events function refused (they carry the payload)
    and the mapping's batch info after retries (the records are read back from the
    stream by sequence number, within the stream's retention).
    """
    settings.require("events_stream", "events_dead_letter_queue")
    sqs = aws_client("sqs", settings.region, settings.endpoint_url)
    kinesis = aws_client("kinesis", settings.region, settings.endpoint_url)
    counts = {"messages": 0, "records": 0}
    while True:
        messages = sqs.receive_message(QueueUrl=settings.events_dead_letter_queue, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return counts
        for message in messages:
            body = json.loads(message["Body"])
            if "KinesisBatchInfo" in body:
                records = _read_back(kinesis, body["KinesisBatchInfo"])
            else:
                payload = base64.b64decode(body["data"])
                records = [{"Data": payload, "PartitionKey": _partition_key(payload)}]
            for start in range(0, len(records), 500):
                kinesis.put_records(StreamName=settings.events_stream, Records=records[start:start + 500])
            sqs.delete_message(QueueUrl=settings.events_dead_letter_queue, ReceiptHandle=message["ReceiptHandle"])
            counts["messages"] += 1
            counts["records"] += len(records)


def _read_back(kinesis, info: dict) -> list[dict]:
    stream_name = info["streamArn"].rsplit("/", 1)[-1]
    iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=info["shardId"],
                                          ShardIteratorType="AT_SEQUENCE_NUMBER",
                                          StartingSequenceNumber=info["startSequenceNumber"])["ShardIterator"]
    end, found = int(info["endSequenceNumber"]), []
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for record in response["Records"]:
            if int(record["SequenceNumber"]) > end:
                return found
            found.append({"Data": record["Data"], "PartitionKey": record["PartitionKey"]})
        if not response["Records"]:
            return found
        iterator = response.get("NextShardIterator")
    return found


def _partition_key(payload: bytes) -> str:
    try:
        user = json.loads(payload).get("user_id")
    except (ValueError, AttributeError):
        user = None
    return user if isinstance(user, str) and user else "dead-letter"


def export_events(settings: Settings, out: Path) -> dict[str, int]:
    """Every raw applied event as CSV (columns EXPORT_COLUMNS; rating is the value of a
    rating event and empty otherwise), the build job's training data."""
    settings.require("raw_events_bucket")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(EXPORT_COLUMNS)
        for event in RawEventLog(settings).events():
            writer.writerow([event.user_id, event.item_id or "", "" if event.value is None else event.value,
                             event.timestamp, event.type, event.event_id,
                             "" if event.dwell_seconds is None else event.dwell_seconds, event.query or ""])
            count += 1
    return {"events": count, "out": str(out)}


def erase_user(settings: Settings, user_id: str) -> dict[str, int]:
    """What DELETE /users/{user_id} does (recsys.privacy.erase_user)."""
    settings.require("profiles_table", "raw_events_bucket")
    impressions = ImpressionStore(settings) if settings.impressions_table else None
    return privacy.erase_user(user_id, ProfileRepository(settings), RawEventLog(settings), impressions)
