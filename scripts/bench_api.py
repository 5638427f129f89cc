"""p50/p99 of the recommendation handler's work in process (Recommender.recommend), on the
demo catalog (9,742 movies, the published collaborative model) over moto's `mock_aws`:
the plain call next to one with filters + diversity + exploration + context. Reasons
are part of every response, so both include them; both include the impression write
(a PutItem and a counter UpdateItem on mock_aws).

    .venv/bin/python scripts/bench_api.py [--calls 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import boto3
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[1]
DATA, CATALOG = ROOT / "data" / "ml-latest-small", ROOT / "build" / "catalog" / "catalog.npz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_REGION="us-east-1", OMP_NUM_THREADS="1")
    from local_stack.provision import provision
    from local_stack.template import Template
    from model_build.data import read_interactions
    from model_build.paths import ENCODER_MODEL
    from model_build.publish import publish_release
    from recsys.adapters.profiles import ProfileRepository
    from recsys.profile import Profile, apply_events
    from recsys.selection import parse_filters
    from recsys.settings import Settings
    from recsys.wiring import recommender as build_recommender

    with mock_aws():
        aws = {n: boto3.client(n) for n in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "s3")}
        template = Template(ROOT / "template.yaml", "recsys-bench", "us-east-1")
        provision(template, aws)
        settings = Settings.from_env({**template.functions()["ApiFunction"].environment, "AWS_REGION": "us-east-1"})
        _, index, _ = publish_release(settings, DATA, CATALOG, CATALOG.with_name("collaborative.npz"), ENCODER_MODEL,
                                      time.time())
        events = defaultdict(list)
        for rating in read_interactions(DATA):
            if int(rating.user_id) <= args.users:
                events[rating.user_id].append(rating.as_event())
        profiles = ProfileRepository(settings)
        for user, history in events.items():
            profile = Profile(user)
            apply_events(profile, history, lambda e: index.vector(e.item_id))
            profiles.save(profile)
        recommender = build_recommender(settings)
        users = sorted(events)
        filters = parse_filters(exclude="1,2,3", categories="Comedy,Drama,Action", exclude_categories="Horror",
                                minimum="year:1980", maximum="year:2010")
        calls = {
            "plain (k=10)": lambda u: recommender.recommend(u, 10, None),
            "filters + diversity 0.3 + explore 0.2 + context (k=10)":
                lambda u: recommender.recommend(u, 10, "space adventure", filters, 0.3, 0.2),
            "filters + diversity 0.3 + explore 0.2 + context (k=100)":
                lambda u: recommender.recommend(u, 100, "space adventure", filters, 0.3, 0.2),
        }
        for call in calls.values():  # warm: index, collaborative alignment, column caches
            for user in users[:5]:
                call(user)
        for name, call in calls.items():
            times = []
            for n in range(args.calls):
                started = time.perf_counter()
                call(users[n % len(users)])
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            print(f"{name:58s} p50 {statistics.median(times):6.1f} ms  p99 {times[int(0.99 * len(times)) - 1]:6.1f} ms"
                  f"  ({len(times)} calls, {len(users)} users)")


if __name__ == "__main__":
    main()
