"""Stage `eval`: ranked lists for a split made by shared/eval/split.py, scored offline.

Trains only on train.csv and items.csv: the catalog is embedded with the encoder, the
blend weights are fitted on a validation carve of train.csv (model_build/blend.py),
the collaborative models are trained on all of train.csv, each user's interactions
are folded into a profile by the events function's own code, and lists are ranked by
the API's own code (`recsys.ranking.rank`). test.csv is read for its user ids only.
Besides the lists, writes <out>.report.json (the fitted weights, validation figures of
the blend and of each component alone, the time each step took) and <out>.report.html
(the same as tables and bar charts).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from model_build import blend, paths
from model_build import catalog as catalog_stage
from model_build.collaborative_training import train
from model_build.data import read_interactions
from model_build.progress import progress
from model_build.report import render
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="write top-50 lists for every test user of a split")
    parser.add_argument("--split", type=Path, required=True, help="directory made by shared/eval/split.py")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL, one line per test user")
    parser.add_argument("--model", type=Path, default=paths.ENCODER_MODEL, help="encoder artifact")
    parser.set_defaults(run=lambda args: run(args.split, args.out, args.model))


def test_users(split: Path) -> list[str]:
    with open(split / "test.csv", newline="", encoding="utf-8") as f:
        return list(dict.fromkeys(row["user_id"] for row in csv.DictReader(f)))


def run(split: Path, out: Path, model: Path) -> int:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 1)
        clock = now
        print(f"eval: {step} done in {timings[step]} s", file=sys.stderr, flush=True)

    catalog_npz = paths.eval_dir(split) / "catalog.npz"
    catalog_stage.run(split, model, catalog_npz)
    index, _ = ItemIndex.from_npz(catalog_npz.read_bytes())
    interactions = list(read_interactions(split))
    lap("catalog")
    weights, validation = blend.fit(interactions, index)
    lap("blend fit (validation)")
    collaborative = Collaborative(train(interactions, index), index)
    lap("collaborative training")
    profiles = blend.profiles_from(interactions, index)
    users = test_users(split)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for user in progress(users, "eval: ranking", unit="user"):
            items = blend.rank(index, profiles.get(user), weights, collaborative)
            f.write(json.dumps({"user_id": user, "items": items}) + "\n")
    lap("ranking")
    report = {"weights": json.loads(weights.to_json()), "validation": validation, "seconds": timings,
              "users": len(users), "train_profiles": len(profiles), "items": len(index)}
    Path(f"{out}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.report.html").write_text(render(report), encoding="utf-8")
    print(f"eval: {len(users)} users -> {out} (report: {out}.report.json) in {sum(timings.values()):.0f} s",
          file=sys.stderr)
    return 0
