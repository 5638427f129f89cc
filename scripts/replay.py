"""Freshness benchmark: does updating profiles in real time beat profiles frozen at train end?

    make replay SPLIT=<dir from shared/eval/split.py> [USERS=100] [SEED=7]

1. Starts the local stack, publishes the split's catalog (items.csv, embedded once) and
   collaborative model (trained on train.csv),
   and bootstraps every user from train.csv through POST /events, Kinesis and the
   events function (this measures events/s through the stack).
2. Takes a seeded sample of test users and their test.csv events in time order.
   Frozen pass: before each test event, asks for that user's top 10 and records
   whether the event's item is in it; no events are sent, so profiles stay as train
   left them. Real-time pass: the same, but after each request the event itself is
   posted (as a rating, or as the choice it is when train.csv's ratings are one value:
   model_build.data.rating_kind; with its original timestamp) and the next request waits
   until the profile shows it (this measures event -> profile-updated latency).
3. Prints one JSON line: hr@10_realtime, hr@10_frozen, their ratio, events/s, latency
   p50/p99, and the sample it used.

Events keep their original timestamps, so at request time (now) no session from the
dataset is active: the real-time gain measured here comes from the long-term vector
and the consumed set moving with each event, not from the session vector.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from local_stack.client import ApiClient
from local_stack.demo import load_users
from local_stack.stack import LocalStack, configure_logging, free_port
from model_build import catalog as catalog_stage
from model_build import collaborative as collaborative_stage
from model_build import paths
from model_build.data import Interaction, rating_kind
from model_build.publish import publish_release, write_items
from recsys.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "replay-key"
K = 10


def test_events(split: Path, users: int, seed: int) -> tuple[list[dict], int]:
    by_user = defaultdict(list)
    with open(split / "test.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_user[row["user_id"]].append(row)
    chosen = sorted(by_user) if users >= len(by_user) else random.Random(seed).sample(sorted(by_user), users)
    rows = [r for u in chosen for r in by_user[u]]
    rows.sort(key=lambda r: (int(r["timestamp"]), r["user_id"], r["item_id"]))
    return rows, len(by_user)


def top10(api: ApiClient, user: str) -> list[str]:
    status, body = api.get(f"/users/{user}/recommendations", k=K)
    if status != 200:
        raise RuntimeError(f"recommendations for {user}: {status} {body}")
    return [entry["item_id"] for entry in body["items"]]


def event_count(stack: LocalStack, user: str) -> int:
    item = stack.aws["dynamodb"].get_item(TableName=stack.template.physical_name("ProfilesTable"),
                                          Key={"user_id": {"S": user}}, ConsistentRead=True).get("Item")
    return int(item["event_count"]["N"]) if item else 0


def replay(stack: LocalStack, api: ApiClient, rows: list[dict], realtime: bool, kind: str) -> dict:
    hits, latencies = 0, []
    counts = {r["user_id"]: event_count(stack, r["user_id"]) for r in rows} if realtime else {}
    for n, row in enumerate(rows):
        user = row["user_id"]
        hits += row["item_id"] in top10(api, user)
        if not realtime:
            continue
        event = Interaction(user, row["item_id"], float(row["rating"]), int(row["timestamp"]), kind).as_event()
        status, body = api.post("/events", {"events": [{
            **event.to_json(), "event_id": f"test-{user}-{row['item_id']}-{row['timestamp']}"}]})
        if status != 202 or body["accepted"] != 1:
            raise RuntimeError(f"event {n} refused: {status} {body}")
        posted = time.perf_counter()
        counts[user] += 1
        while event_count(stack, user) < counts[user]:
            if time.perf_counter() - posted > 30:
                raise RuntimeError(f"event {n} of {user} not applied within 30 s")
            time.sleep(0.005)
        latencies.append(time.perf_counter() - posted)
    return {"hits": hits, "latencies": latencies}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--users", type=int, default=100, help="seeded sample of test users (all if larger)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    configure_logging()
    started = time.perf_counter()
    catalog_npz = paths.eval_dir(args.split) / "catalog.npz"
    catalog_stage.run(args.split, paths.ENCODER_MODEL, catalog_npz)
    collaborative_npz = catalog_npz.with_name("collaborative.npz")
    collaborative_stage.run(args.split, collaborative_npz, catalog_npz)  # trained once per split
    rows, all_users = test_events(args.split, args.users, args.seed)
    with LocalStack(api_key=API_KEY, admin_key=API_KEY + "-admin", port=free_port(),
                    log_dir=REPO_ROOT / "build" / "logs" / "replay") as stack:
        api = ApiClient(stack.url, API_KEY)
        settings = Settings.from_env(stack.environment_of("ApiFunction"))
        written_at = time.time()
        _, index, model_version = publish_release(settings, args.split, catalog_npz, collaborative_npz,
                                                  paths.ENCODER_MODEL, written_at)
        write_items(settings, args.split, index, model_version, written_at)
        bootstrap_started = time.perf_counter()
        train = load_users(stack, api, args.split, timeout=1800)
        bootstrap_seconds = time.perf_counter() - bootstrap_started
        kind = rating_kind(args.split / "train.csv")  # what train.csv was bootstrapped as
        frozen = replay(stack, api, rows, realtime=False, kind=kind)
        live = replay(stack, api, rows, realtime=True, kind=kind)
    hr_frozen, hr_live = frozen["hits"] / len(rows), live["hits"] / len(rows)
    result = {
        "hr@10_realtime": round(hr_live, 5), "hr@10_frozen": round(hr_frozen, 5),
        "ratio": round(hr_live / hr_frozen, 3) if hr_frozen else None,
        "events_per_second": round(train["events"] / bootstrap_seconds, 1),
        "event_to_profile_p50_ms": round(1000 * statistics.median(live["latencies"]), 1),
        "event_to_profile_p99_ms": round(1000 * percentile(live["latencies"], 0.99), 1),
        "test_events": len(rows), "test_users": min(args.users, all_users), "test_users_in_split": all_users,
        "sample": f"seeded random sample (seed {args.seed}) of {min(args.users, all_users)} of {all_users} test users, "
                  "all their test events in time order",
        "train_events": train["events"], "bootstrap_seconds": round(bootstrap_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
