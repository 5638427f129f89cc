"""local_stack.event_sources: Lambda's retry, bisect and on-failure semantics, on plain data.

The function and stream here are small fakes (a list of records and a callable): the
algorithm under test is the mapping's, and the integration tests run it for real.
"""
from __future__ import annotations

import json

from local_stack.event_sources import EventSourceMapping, StreamReader
from local_stack.runtime import FunctionError


class ListReader(StreamReader):
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    batch_info_key = "KinesisBatchInfo"

    def to_lambda(self, record: dict, shard: str) -> dict:
        return {"kinesis": {"sequenceNumber": record["seq"], "data": record["data"]}}

    def arrival(self, record: dict) -> float:
        return 0.0

    def sequence(self, record: dict) -> str:
        return record["seq"]

    def filter_view(self, record: dict) -> dict:
        return {"data": record["data"]}


class Function:
    """Fails every record whose data is 'bad'; raises if the batch holds 'boom'."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def invoke(self, event: dict) -> dict:
        batch = event["Records"]
        self.calls.append([r["kinesis"]["sequenceNumber"] for r in batch])
        if any(r["kinesis"]["data"] == "boom" for r in batch):
            raise FunctionError({"errorType": "RuntimeError", "errorMessage": "boom"})
        return {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]}
                                      for r in batch if r["kinesis"]["data"] == "bad"]}


class Queue:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.messages.append(json.loads(MessageBody))


def mapping(**properties) -> tuple[EventSourceMapping, Function, Queue]:
    function, queue = Function(), Queue()
    props = {"BatchSize": 100, "FunctionResponseTypes": ["ReportBatchItemFailures"],
             "BisectBatchOnFunctionError": True, "MaximumRetryAttempts": 3, **properties}
    return EventSourceMapping("m", ListReader(), function, props, queue, "url", "arn:fn"), function, queue


def records(*data: str) -> list[dict]:
    return [{"seq": str(n), "data": d} for n, d in enumerate(data)]


def test_a_clean_batch_is_one_invocation() -> None:
    m, function, queue = mapping()
    m._invoke_with_retries("shard-0", records(*["ok"] * 10))
    assert function.calls == [[str(n) for n in range(10)]] and m.processed == 10 and not queue.messages


def test_a_reported_failure_resumes_from_it_and_is_isolated_then_dead_lettered() -> None:
    m, function, queue = mapping()
    m._invoke_with_retries("shard-0", records("ok", "ok", "bad", "ok", "ok"))
    assert m.processed == 5 and m.dead_lettered == 1
    assert function.calls[1][0] == "2", "the retry starts at the failed record"
    assert all("0" not in call and "1" not in call for call in function.calls[1:]), "applied records are not resent"
    (message,) = queue.messages
    info = message["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("2", "2", 1)
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 4


def test_a_function_error_bisects_down_to_the_poison_record() -> None:
    m, function, queue = mapping()
    m._invoke_with_retries("shard-0", records(*["ok"] * 6, "boom", *["ok"] * 9))
    assert m.processed == 16 and m.dead_lettered == 1
    (message,) = queue.messages
    assert message["KinesisBatchInfo"]["startSequenceNumber"] == "6"
    assert message["responseContext"]["functionError"] == "RuntimeError"


def test_without_bisect_the_whole_rest_of_the_batch_is_dead_lettered_after_retries() -> None:
    m, function, queue = mapping(BisectBatchOnFunctionError=False, MaximumRetryAttempts=2)
    m._invoke_with_retries("shard-0", records("ok", "boom", "ok"))
    assert len(function.calls) == 3 and m.dead_lettered == 3
    assert queue.messages[0]["KinesisBatchInfo"]["batchSize"] == 3


def test_stopping_ends_the_retries_at_once() -> None:
    """Ctrl-C while a poison batch is retried: the mapping stops between invocations
    instead of bisecting and retrying to the end."""
    m, function, queue = mapping()
    calls = function.invoke

    def stop_after_first(event: dict) -> dict:
        m.signal_stop()
        return calls(event)

    function.invoke = stop_after_first  # type: ignore[method-assign]
    m._invoke_with_retries("shard-0", records(*["boom"] * 64))
    assert len(function.calls) == 1 and not queue.messages and m.processed == 0


def test_caught_up_means_a_read_found_nothing_after_the_time_asked() -> None:
    import time

    m, _, _ = mapping()
    m._empty_read_at = {"shard-0": None, "shard-1": None}
    since = time.monotonic()
    assert not m.caught_up(since), "nothing read yet"
    m._empty_read_at = {"shard-0": since + 0.1, "shard-1": since - 1}
    assert not m.caught_up(since), "shard-1's last empty read began before: records put since may be unread"
    m._empty_read_at["shard-1"] = since + 0.2
    assert m.caught_up(since)
