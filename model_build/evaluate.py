"""Stage `eval`: ranked lists for a split made by shared/eval/split.py, scored offline.

Trains only on train.csv and items.csv: the catalog is embedded with the encoder, the
blend weights are fitted on a validation carve of train.csv (model_build/blend.py),
the collaborative models are trained on all of train.csv, each user's interactions
are folded into a profile by the events function's own code, and lists are ranked by
the API's own code (`recsys.ranking.rank`). test.csv is read for its user ids only.
Besides the lists, writes the baselines' lists for the same test users, ranked by the same
code under the weights of one signal alone: <out>.content.jsonl (content only, the mean of
the user's history vectors) and <out>.popularity.jsonl (score.py scores them as it scores
the blend's); and <out>.report.json (the fitted weights, validation figures of the blend
and of each signal alone, the cold-recall floor the fit held the blend to, the time each
step took) and <out>.report.html (the same as tables and bar charts).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from model_build import blend, encoder_choice, finetune, paths
from model_build import catalog as catalog_stage
from model_build.collaborative_training import train
from model_build.data import read_interactions
from model_build.progress import progress
from model_build.report import render
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.scoring import BlendWeights

BASELINES = {"content": blend.CONTENT_ONLY, "popularity": "popularity alone"}  # file suffix: signal alone


def baseline_path(out: Path, suffix: str) -> Path:
    """<out>.<suffix>.jsonl beside the blend's lists (out.jsonl -> out.content.jsonl)."""
    return out.with_name(f"{out.stem}.{suffix}{out.suffix or '.jsonl'}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="write top-50 lists for every test user of a split")
    parser.add_argument("--split", type=Path, required=True, help="directory made by shared/eval/split.py")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL, one line per test user")
    parser.add_argument("--model", type=Path, default=paths.ENCODER_MODEL, help="encoder artifact")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune MiniLM on the train interactions too; kept if its blend improves on "
                             "the pre-trained one's on validation (make eval passes it unless FINETUNE=0)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"fine-tuning steps (default {finetune.STEPS} on a GPU, {finetune.CPU_STEPS} on CPU)")
    parser.set_defaults(run=lambda args: run(args.split, args.out, args.model, args.finetune, args.steps))


def test_users(split: Path) -> list[str]:
    with open(split / "test.csv", newline="", encoding="utf-8") as f:
        return list(dict.fromkeys(row["user_id"] for row in csv.DictReader(f)))


def run(split: Path, out: Path, model: Path, tune: bool = False, steps: int | None = None) -> int:
    """The lists and the report; with `tune`, the encoder fine-tuned too (`steps`, default
    the device's: model_build/finetune.py), whose item vectors serve the lists if it wins
    on validation (`finetuned`)."""
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
    fitted = blend.fit(interactions, index)
    weights = fitted.weights
    lap("blend fit (validation)")
    tuned: dict[str, Any] | None = None
    if tune:
        tuned = encoder_choice.finetuned(split, interactions, fitted.weights, fitted.validation["blend"],
                                         fitted.floor, paths.eval_dir(split) / "finetune", steps, lap, fitted.config)
        if tuned["kept"]:  # its item vectors and weights serve every list, new items' too
            index, _ = ItemIndex.from_npz(Path(tuned["catalog"]).read_bytes())
            weights = BlendWeights.from_json(json.dumps(tuned["weights"]))
    collaborative = Collaborative(train(interactions, index, fitted.config), index)
    lap("collaborative training")
    profiles = blend.profiles_from(interactions, index)
    users = test_users(split)
    out.parent.mkdir(parents=True, exist_ok=True)
    lists = {out: weights}
    for suffix, name in BASELINES.items():
        lists[baseline_path(out, suffix)] = replace(weights, **blend.ALONE[name])
    for path, ranked_by in lists.items():
        with open(path, "w", encoding="utf-8") as f:
            for user in progress(users, f"eval: ranking {path.name}", unit="user"):
                items = blend.rank(index, profiles.get(user), ranked_by, collaborative)
                f.write(json.dumps({"user_id": user, "items": items}) + "\n")
    lap("ranking")
    report = {"weights": json.loads(weights.to_json()), "training": asdict(fitted.config),
              "validation": fitted.validation,
              "cold_floor": {"cold_recall@20": fitted.floor, "set_by": fitted.floor_from, "met": fitted.floor_met},
              "baseline_lists": {name: str(baseline_path(out, suffix)) for suffix, name in BASELINES.items()},
              "seconds": timings, "users": len(users), "train_profiles": len(profiles), "items": len(index)}
    if tuned is not None:
        report["finetune"] = tuned
    Path(f"{out}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.report.html").write_text(render(report), encoding="utf-8")
    print(f"eval: {len(users)} users -> {out} (report: {out}.report.json) in {sum(timings.values()):.0f} s",
          file=sys.stderr)
    return 0
