"""Stage `eval`: ranked lists for a split made by shared/eval/split.py, scored offline.

Trains only on train.csv and items.csv: the catalog is embedded with the encoder,
each user's train interactions are folded into a profile by the events function's
own code (`recsys.profile.apply_events`), and lists are ranked by the API's own code
(`recsys.scoring.recommend`). test.csv is read for its user ids only.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from model_build import catalog as catalog_stage
from model_build.data import read_interactions
from recsys import scoring
from recsys.events import Event
from recsys.index import ItemIndex
from recsys.profile import Profile, apply_events

LIST_LENGTH = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="write top-50 lists for every test user of a split")
    parser.add_argument("--split", type=Path, required=True, help="directory made by shared/eval/split.py")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL, one line per test user")
    parser.add_argument("--model", type=Path, default=catalog_stage.DEFAULT_MODEL, help="encoder artifact")
    parser.set_defaults(run=lambda args: run(args.split, args.out, args.model))


def train_profiles(split: Path, index: ItemIndex) -> dict[str, Profile]:
    """Every rating in train.csv as a rating event, applied in time order per user."""
    events: dict[str, list[Event]] = defaultdict(list)
    for row in read_interactions(split):
        events[row.user_id].append(row.as_event())
    profiles = {user: Profile(user_id=user) for user in events}
    for user, user_events in events.items():
        apply_events(profiles[user], user_events, lambda e: index.vector(e.item_id))
    return profiles


def test_users(split: Path) -> list[str]:
    with open(split / "test.csv", newline="", encoding="utf-8") as f:
        return list(dict.fromkeys(row["user_id"] for row in csv.DictReader(f)))


def run(split: Path, out: Path, model: Path) -> int:
    started = time.perf_counter()
    catalog_npz = Path("build/eval") / split.resolve().name / "catalog.npz"
    catalog_stage.run(split, model, catalog_npz)
    index, _ = ItemIndex.from_npz(catalog_npz.read_bytes())
    profiles = train_profiles(split, index)
    out.parent.mkdir(parents=True, exist_ok=True)
    users = test_users(split)
    with open(out, "w", encoding="utf-8") as f:
        for user in users:
            profile = profiles.get(user)
            now = profile.last_event_at if profile and profile.last_event_at else time.time()
            ranked = scoring.recommend(index, profile, None, LIST_LENGTH, now=now)
            f.write(json.dumps({"user_id": user, "items": [item for item, _ in ranked]}) + "\n")
    print(f"eval: {len(users)} users, {len(profiles)} train profiles, {len(index)} items -> {out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
