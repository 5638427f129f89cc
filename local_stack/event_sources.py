"""Event-source mappings as Lambda runs them: poll a stream, batch, filter, invoke, retry.

Honoured from the template: BatchSize, MaximumBatchingWindowInSeconds,
StartingPosition, FilterCriteria, FunctionResponseTypes (ReportBatchItemFailures),
BisectBatchOnFunctionError, MaximumRetryAttempts, MaximumRecordAgeInSeconds and
DestinationConfig.OnFailure (an SQS queue, sent Lambda's batch-info record).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import uuid
from typing import Any

from local_stack.filters import matches
from local_stack.runtime import FunctionError, FunctionPool

log = logging.getLogger("local_stack")
POLL_SECONDS = 0.1


class StreamReader:
    """One stream's shards and records, in Lambda's event shape."""

    batch_info_key = "BatchInfo"

    def shards(self) -> list[str]: ...
    def iterator(self, shard: str, position: str) -> str: ...
    def read(self, iterator: str, limit: int) -> tuple[list[dict], str | None]: ...
    def to_lambda(self, record: dict, shard: str) -> dict: ...
    def filter_view(self, record: dict) -> dict: ...
    def arrival(self, record: dict) -> float: ...
    def sequence(self, record: dict) -> str: ...


class KinesisReader(StreamReader):
    batch_info_key = "KinesisBatchInfo"

    def __init__(self, kinesis, stream_arn: str, region: str) -> None:
        self.kinesis, self.arn, self.region = kinesis, stream_arn, region
        self.name = stream_arn.rsplit("/", 1)[-1]

    def shards(self) -> list[str]:
        return [s["ShardId"] for s in self.kinesis.list_shards(StreamName=self.name)["Shards"]]

    def iterator(self, shard: str, position: str) -> str:
        return self.kinesis.get_shard_iterator(StreamName=self.name, ShardId=shard,
                                               ShardIteratorType=position)["ShardIterator"]

    def read(self, iterator: str, limit: int) -> tuple[list[dict], str | None]:
        response = self.kinesis.get_records(ShardIterator=iterator, Limit=limit)
        return response["Records"], response.get("NextShardIterator")

    def to_lambda(self, record: dict, shard: str) -> dict:
        return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": record["PartitionKey"],
                            "sequenceNumber": record["SequenceNumber"],
                            "data": base64.b64encode(record["Data"]).decode(),
                            "approximateArrivalTimestamp": self.arrival(record)},
                "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventName": "aws:kinesis:record",
                "eventID": f"{shard}:{record['SequenceNumber']}",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/local", "awsRegion": self.region,
                "eventSourceARN": self.arn}

    def filter_view(self, record: dict) -> dict:
        try:
            data: Any = json.loads(record["Data"])
        except ValueError:
            data = None
        return {"partitionKey": record["PartitionKey"], "data": data}

    def arrival(self, record: dict) -> float:
        return _epoch(record["ApproximateArrivalTimestamp"])

    def sequence(self, record: dict) -> str:
        return record["SequenceNumber"]


class DynamoDBStreamReader(StreamReader):
    batch_info_key = "DDBStreamBatchInfo"

    def __init__(self, streams, stream_arn: str, region: str) -> None:
        self.streams, self.arn, self.region = streams, stream_arn, region

    def shards(self) -> list[str]:
        return [s["ShardId"] for s in self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]]

    def iterator(self, shard: str, position: str) -> str:
        return self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=shard,
                                               ShardIteratorType=position)["ShardIterator"]

    def read(self, iterator: str, limit: int) -> tuple[list[dict], str | None]:
        response = self.streams.get_records(ShardIterator=iterator, Limit=limit)
        return response["Records"], response.get("NextShardIterator")

    def to_lambda(self, record: dict, shard: str) -> dict:
        stream_record = _base64_binaries(record["dynamodb"])
        if "ApproximateCreationDateTime" in stream_record:
            stream_record["ApproximateCreationDateTime"] = _epoch(stream_record["ApproximateCreationDateTime"])
        return {"eventID": record.get("eventID", uuid.uuid4().hex), "eventName": record["eventName"],
                "eventVersion": record.get("eventVersion", "1.1"), "eventSource": "aws:dynamodb",
                "awsRegion": self.region, "dynamodb": stream_record, "eventSourceARN": self.arn}

    def filter_view(self, record: dict) -> dict:
        return {"eventName": record["eventName"], "dynamodb": record["dynamodb"]}

    def arrival(self, record: dict) -> float:
        return _epoch(record["dynamodb"].get("ApproximateCreationDateTime", time.time()))

    def sequence(self, record: dict) -> str:
        return record["dynamodb"]["SequenceNumber"]


def _base64_binaries(value: Any) -> Any:
    """boto3 hands binary attributes over as bytes; Lambda's JSON event carries base64."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _base64_binaries(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_base64_binaries(v) for v in value]
    return value


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


class EventSourceMapping:
    """Polls every shard of one stream and invokes one function with its batches."""

    def __init__(self, name: str, reader: StreamReader, function: FunctionPool, properties: dict,
                 sqs, dead_letter_url: str | None, function_arn: str) -> None:
        self.name, self.reader, self.function = name, reader, function
        self.sqs, self.dead_letter_url, self.function_arn = sqs, dead_letter_url, function_arn
        self.batch_size = int(properties.get("BatchSize", 100))
        self.window = float(properties.get("MaximumBatchingWindowInSeconds", 0))
        self.position = properties.get("StartingPosition", "LATEST")
        self.partial = "ReportBatchItemFailures" in properties.get("FunctionResponseTypes", [])
        self.bisect = bool(properties.get("BisectBatchOnFunctionError", False))
        self.retries = int(properties.get("MaximumRetryAttempts", -1))
        self.max_age = int(properties.get("MaximumRecordAgeInSeconds", -1))
        self.patterns = [json.loads(f["Pattern"]) for f in properties.get("FilterCriteria", {}).get("Filters", [])]
        self.processed = 0          # records handled: applied, filtered out, or dead-lettered
        self.dead_lettered = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Per shard, when the latest read that found nothing new (and nothing pending) began.
        self._empty_read_at: dict[str, float | None] = {}

    def start(self) -> None:
        for shard in self.reader.shards():
            self._empty_read_at[shard] = None
            thread = threading.Thread(target=self._poll, args=(shard,), name=f"{self.name}-{shard}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def caught_up(self, since: float) -> bool:
        """Whether every shard has read to its end since `since` (time.monotonic()) and
        delivered all it read: every record put before `since` was handled."""
        return all(at is not None and at >= since for at in self._empty_read_at.values())

    def signal_stop(self) -> None:
        """Stop polling and retrying; a batch being invoked is abandoned when its function stops."""
        self._stop.set()

    def stop(self, deadline: float | None = None) -> None:
        self._stop.set()
        deadline = time.monotonic() + 5 if deadline is None else deadline
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _poll(self, shard: str) -> None:
        iterator = self.reader.iterator(shard, self.position)
        pending: list[dict] = []
        first_seen = 0.0
        while not self._stop.is_set() and iterator:
            read_at = time.monotonic()
            try:
                records, iterator = self.reader.read(iterator, self.batch_size - len(pending))
            except Exception:  # moto going away at shutdown, or a transient error
                if self._stop.is_set():
                    return
                log.exception("%s: reading %s failed", self.name, shard)
                time.sleep(1)
                continue
            if records and not pending:
                first_seen = time.monotonic()
            pending += records
            full = len(pending) >= self.batch_size
            if pending and (full or time.monotonic() - first_seen >= self.window):
                self._empty_read_at[shard] = None
                self._deliver(shard, pending)
                pending = []
            elif not records:
                if not pending:
                    self._empty_read_at[shard] = read_at
                time.sleep(POLL_SECONDS)

    def _deliver(self, shard: str, records: list[dict]) -> None:
        fresh, expired = [], []
        for record in records:
            too_old = self.max_age >= 0 and time.time() - self.reader.arrival(record) > self.max_age
            (expired if too_old else fresh).append(record)
        if expired:
            self._dead_letter(shard, expired, "RecordAgeExceeded", None, 0)
        kept = [r for r in fresh if not self.patterns or any(matches(p, self.reader.filter_view(r))
                                                              for p in self.patterns)]
        self.processed += len(fresh) - len(kept)
        if kept:
            self._invoke_with_retries(shard, kept)

    def _invoke_with_retries(self, shard: str, records: list[dict]) -> None:
        """Lambda's stream semantics: resume from the first failed record; with bisect on,
        split a batch that fails at its head (splitting does not use up retries), so a
        poison record ends up alone and only it is dead-lettered."""
        batches = [(records, 0)]
        while batches and not self._stop.is_set():
            batch, attempts = batches.pop(0)
            error, failed_from = None, None
            try:
                response = self.function.invoke({"Records": [self.reader.to_lambda(r, shard) for r in batch]})
                failed_from = self._first_failure(batch, response)
            except FunctionError as raised:
                error, failed_from = raised, 0
            if failed_from is None:
                self.processed += len(batch)
                continue
            self.processed += failed_from
            remaining = batch[failed_from:]
            if failed_from > 0:
                batches.insert(0, (remaining, attempts))
            elif self.bisect and len(remaining) > 1:
                half = len(remaining) // 2
                batches[:0] = [(remaining[:half], attempts), (remaining[half:], attempts)]
            elif self.retries >= 0 and attempts >= self.retries:
                self._dead_letter(shard, remaining, "RetryAttemptsExhausted", error, attempts + 1)
            else:
                batches.insert(0, (remaining, attempts + 1))

    def _first_failure(self, batch: list[dict], response: Any) -> int | None:
        if not self.partial or not isinstance(response, dict):
            return None
        failed = {f.get("itemIdentifier") for f in response.get("batchItemFailures") or []}
        if not failed:
            return None
        positions = [i for i, r in enumerate(batch) if self.reader.sequence(r) in failed]
        return min(positions) if positions else 0

    def _dead_letter(self, shard: str, records: list[dict], condition: str, error: FunctionError | None,
                     invocations: int) -> None:
        self.dead_lettered += len(records)
        self.processed += len(records)
        log.warning("%s: %d record(s) of %s sent to the dead-letter queue (%s)", self.name, len(records),
                    shard, condition)
        if not self.dead_letter_url:
            return
        first, last = records[0], records[-1]
        message = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.function_arn,
                               "condition": condition, "approximateInvokeCount": invocations},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": error.payload["errorType"] if error else None},
            "version": "1.0", "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            self.reader.batch_info_key: {"shardId": shard, "startSequenceNumber": self.reader.sequence(first),
                          "endSequenceNumber": self.reader.sequence(last),
                          "approximateArrivalOfFirstRecord": self.reader.arrival(first),
                          "approximateArrivalOfLastRecord": self.reader.arrival(last),
                          "batchSize": len(records), "streamArn": self.reader.arn}}
        self.sqs.send_message(QueueUrl=self.dead_letter_url, MessageBody=json.dumps(message, default=str))
