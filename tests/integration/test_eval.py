"""`make eval`, the entry point the team's scorecards call, end to end: the real int8 encoder,
the blend fit, the encoder fine-tuned (a few steps) and judged by the whole blend, the lists
and the report. The split is written here in shared/eval/split.py's format and by its
protocol (that script lives outside the repository), in the shape of its RecBole/UniSRec
product sets: one text field per item, every rating 1, the position in a user's sequence as
the time, short histories. The items and users are a slice of the repo's ml-latest-small."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from model_build import blend, evaluate, paths

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "data" / "ml-latest-small"
SPLIT_NAME = "test-eval-product-shape"  # its work folder: build/eval/<this>, removed after
ITEMS, USERS, HISTORY = 400, 150, 12


def tie_break(user: str, item: str) -> str:
    """split.py's: a seeded hash of (user, item), so no id order leaks into a sequence."""
    return hashlib.sha1(f"7:{user}:{item}".encode()).hexdigest()


def product_shaped(out: Path) -> dict[str, set[str]]:
    """A split of ITEMS movies as products: title, genres and tags in one text, each user's
    last HISTORY choices among them as positions 0.., rating 1; split.py's protocol (5% of the
    items new, each user's last 20% held out, the new items' interactions dropped from the
    rest, seed 7). Each test user's train items, for the checks."""
    with open(DATA / "ratings.csv", newline="", encoding="utf-8") as f:
        ratings = list(csv.DictReader(f))
    counts: dict[str, int] = defaultdict(int)
    for r in ratings:
        counts[r["movieId"]] += 1
    chosen = set(sorted(counts, key=lambda i: (-counts[i], int(i)))[:ITEMS])
    tags: dict[str, list[str]] = defaultdict(list)
    with open(DATA / "tags.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["movieId"] in chosen and r["tag"] not in tags[r["movieId"]]:
                tags[r["movieId"]].append(r["tag"])
    with open(DATA / "movies.csv", newline="", encoding="utf-8") as f:
        text = {r["movieId"]: f"{r['title']}. {r['genres'].replace('|', ', ')}. {', '.join(tags[r['movieId']])}"
                for r in csv.DictReader(f) if r["movieId"] in chosen}
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in ratings:
        if r["movieId"] in chosen:
            by_user[r["userId"]].append(r)
    users = [u for u in sorted(by_user, key=int) if len(by_user[u]) >= HISTORY][:USERS]
    rng = random.Random(7)
    items = sorted(chosen, key=lambda x: (len(x), x))
    cold = set(rng.sample(items, round(0.05 * len(items))))
    train, test, known = [], [], {}
    for u in users:
        ordered = sorted(by_user[u], key=lambda r: (int(r["timestamp"]), tie_break(u, r["movieId"])))
        sequence = [(u, r["movieId"], "1", t) for t, r in enumerate(ordered[-HISTORY:])]
        n_test = min(len(sequence) - 1, max(1, math.ceil(0.2 * len(sequence))))
        head = [row for row in sequence[:-n_test] if row[1] not in cold]
        if head:
            train += head
            test += sequence[-n_test:]
            known[u] = {row[1] for row in head}
    out.mkdir(parents=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("user_id", "item_id", "rating", "timestamp"), *rows])
    with open(out / "items.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("item_id", "title", "genres", "tags"), *((i, text[i], "", "") for i in items)])
    (out / "cold_items.txt").write_text("".join(f"{i}\n" for i in sorted(cold)))
    return known


@pytest.fixture(scope="module")
def evaluated(encoder_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    work = paths.eval_dir(Path(SPLIT_NAME))
    shutil.rmtree(work, ignore_errors=True)
    split = tmp_path_factory.mktemp("eval") / SPLIT_NAME
    known = product_shaped(split)
    out = split.parent / "recs.jsonl"
    # What `make eval SPLIT=... OUT=...` runs (test_make_eval_fine_tunes_unless_told_not_to_and_...), 3 steps.
    subprocess.run([sys.executable, "-m", "model_build", "eval", "--split", str(split), "--out", str(out),
                    "--finetune", "--steps", "3"], cwd=REPO_ROOT, check=True, timeout=1200)
    yield split, out, known
    shutil.rmtree(work, ignore_errors=True)


def read_lists(path: Path) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        return {row["user_id"]: row["items"] for row in map(json.loads, f)}


@pytest.mark.parametrize(("target", "setting", "fine_tunes"), [
    ("eval", None, True), ("eval", "", True), ("eval", "1", True), ("eval", "0", False), ("eval", "no", False),
    ("model", None, False), ("model", "1", True), ("model", "0", False), ("model", "off", False)])
def test_make_eval_fine_tunes_unless_told_not_to_and_make_model_only_when_told(target: str, setting: str | None,
                                                                            fine_tunes: bool) -> None:
    env = {name: value for name, value in os.environ.items() if name != "FINETUNE"}
    args = ["make", "-n", target, "SPLIT=s", "OUT=o", "DATA=d"] + ([] if setting is None else [f"FINETUNE={setting}"])
    command = subprocess.run(args, cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True).stdout
    assert ("--finetune" in command) == fine_tunes


def test_every_test_user_gets_a_full_list_of_catalog_items_outside_their_history(evaluated) -> None:
    split, out, known = evaluated
    with open(split / "items.csv", newline="", encoding="utf-8") as f:
        catalog = {row["item_id"] for row in csv.DictReader(f)}
    test_users = evaluate.test_users(split)
    for path in (out, out.with_name("recs.content.jsonl"), out.with_name("recs.popularity.jsonl")):
        lists = read_lists(path)
        assert list(lists) == test_users
        for user, items in lists.items():
            assert len(items) == len(set(items)) == blend.LIST_LENGTH
            assert set(items) <= catalog and not set(items) & known[user]


def test_the_report_shows_the_encoder_choice_by_its_own_rule(evaluated) -> None:
    _, out, _ = evaluated
    report = json.loads(Path(f"{out}.report.json").read_text())
    tuned = report["finetune"]
    assert tuned["training"]["steps"] == 3
    figures, than = tuned["validation"]["finetuned"], tuned["validation"]["pretrained"]
    floors = tuned["cold_floor"]
    assert than == report["validation"]["blend"] and floors["pretrained"] == report["cold_floor"]["cold_recall@20"]
    assert tuned["kept"] == blend.improves_on(figures, floors["finetuned"], than, floors["pretrained"])
    if tuned["kept"]:  # then its weights rank the lists
        assert report["weights"] == tuned["weights"]
