"""What live popularity costs: one batch (parse, fold, one S3 put to moto in process),
and the API's re-read of a changed shard (decode, sum shards, set the index's counts).

Folds the 100,836 demo ratings in batches of 5,000, as PopularityFunction receives
them; prints the median batch time, the size of the shard's counters, and the time
to load them into the demo catalog's index.

    .venv/bin/python scripts/bench_popularity.py
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import boto3
from moto import mock_aws

from local_stack.demo import rating_events
from recsys.adapters.artifacts import PopularityStore
from recsys.events import parse_event
from recsys.index import ItemIndex
from recsys.ingest import PopularityCounter
from recsys.popularity import LivePopularity, PopularityCounters
from recsys.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BATCH, SHARD, BUCKET = 5000, "shardId-000000000000", "bench-artifacts"


def main() -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    payloads = [json.dumps(e).encode() for e in rating_events(ROOT / "data" / "ml-latest-small")]
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        settings = Settings(artifacts_bucket=BUCKET)
        counter = PopularityCounter(PopularityStore(settings))
        seconds = []
        for start in range(0, len(payloads), BATCH):
            batch = [(str(start + n + 1), p) for n, p in enumerate(payloads[start:start + BATCH])]
            began = time.perf_counter()
            counter.apply(SHARD, batch)
            seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        for payload in payloads[:BATCH]:
            parse_event(json.loads(payload))
        parsing = time.perf_counter() - began
        counters, _ = PopularityStore(settings).load(SHARD)
        size = len(counters.to_npz())
    median = statistics.median(seconds) * 1000
    print(f"{len(payloads)} events in {len(seconds)} batches of {BATCH}: median {median:.0f} ms a batch "
          f"(parsing {parsing * 1000:.0f} ms of it), {sum(seconds):.2f} s in all; counters "
          f"{size / 1024:.0f} KiB ({len(counters.item_ids)} items, {len(counters.remembered)} event ids)")
    index, _ = ItemIndex.from_npz((ROOT / "build" / "catalog" / "catalog.npz").read_bytes())
    data, reloads = counters.to_npz(), []
    for _ in range(20):
        began = time.perf_counter()
        live = LivePopularity.combine([PopularityCounters.from_npz(data)])
        index.set_live_counts(live.item_ids, live.popular, live.recent)
        reloads.append(time.perf_counter() - began)
    print(f"the API's re-read of one changed shard: median {statistics.median(reloads) * 1000:.1f} ms, "
          f"max {max(reloads) * 1000:.1f} ms over 20 (the S3 GET not included)")


if __name__ == "__main__":
    main()
