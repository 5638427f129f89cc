"""The event stream (Kinesis), the dead-letter queue (SQS) and the raw event log (S3)."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

from recsys.adapters.aws import aws_client
from recsys.events import Event
from recsys.settings import Settings


class KinesisEventStream:
    """Puts events on Kinesis, partitioned by user so each user's events stay in order."""

    def __init__(self, settings: Settings) -> None:
        self.stream = settings.events_stream
        self.kinesis = aws_client("kinesis", settings.region, settings.endpoint_url)

    def put(self, events: list[Event], attempts: int = 3) -> list[Event]:
        """Returns the events Kinesis would not take after retries (throttling)."""
        pending = events
        for _ in range(attempts):
            failed: list[Event] = []
            for start in range(0, len(pending), 500):
                chunk = pending[start:start + 500]
                response = self.kinesis.put_records(StreamName=self.stream, Records=[
                    {"Data": json.dumps(e.to_json()).encode(), "PartitionKey": e.user_id} for e in chunk])
                if response.get("FailedRecordCount"):
                    failed += [e for e, r in zip(chunk, response["Records"], strict=True) if "ErrorCode" in r]
            if not failed:
                return []
            pending = failed
            time.sleep(0.1)
        return pending



class RawEventLog:
    """Every applied event, kept in S3 as the build job's training data, one object per
    user and batch (`events/user=<quoted id>/<first timestamp>-<digest>.jsonl`), so a
    user's events can be listed and erased by prefix. Objects are named by their
    content: writing the same events again rewrites the same object."""

    prefix = "events/"

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.raw_events_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    def _user_prefix(self, user_id: str) -> str:
        return f"{self.prefix}user={quote(user_id, safe='')}/"

    def put(self, user_id: str, events: list[Event]) -> None:
        if not events:
            return
        body = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in events).encode()
        key = f"{self._user_prefix(user_id)}{int(min(e.timestamp for e in events)):011d}-" \
              f"{hashlib.sha256(body).hexdigest()[:16]}.jsonl"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def keys(self, user_id: str | None = None) -> Iterator[str]:
        prefix = self._user_prefix(user_id) if user_id is not None else self.prefix
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from (o["Key"] for o in page.get("Contents", []))

    def events(self, user_id: str | None = None) -> Iterator[Event]:
        for key in self.keys(user_id):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
            yield from (Event(**json.loads(line)) for line in body.splitlines() if line)

    def erase(self, user_id: str) -> int:
        """Deletes every object of the user; returns how many. Raises if S3 refused any key
        (delete_objects reports per-key Errors in a 200 response), naming them, so an erase
        never reports success while the user's raw events remain."""
        keys = list(self.keys(user_id))
        failed: list[str] = []
        for start in range(0, len(keys), 1000):
            response = self.s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
            failed.extend(f"{e.get('Key')}: {e.get('Code')}" for e in response.get("Errors", []))
        if failed:
            raise RuntimeError(f"raw event log erase of {len(failed)} of {len(keys)} objects failed: "
                               + "; ".join(failed[:10]))
        return len(keys)




class DeadLetterQueue:
    """Where a record that can never be applied goes, with the reason, to be fixed and redriven."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.events_dead_letter_queue
        self.sqs = aws_client("sqs", settings.region, settings.endpoint_url)

    def send(self, record_id: str, payload: bytes, reason: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps({
            "condition": "InvalidRecord", "reason": reason, "sequenceNumber": record_id,
            "data": base64.b64encode(payload).decode()}))
