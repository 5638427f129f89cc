"""The validation carve of training interactions, and the figures lists are scored by.

`carve` follows shared/eval/split.py's protocol on train alone: a share of items
becomes "new", each user's last 20% in time order is held out, and the new items'
interactions are dropped from the rest. `metrics` are shared/eval/score.py's.

Negative feedback follows the serving rule: the carve's training rows keep every event
(folded into profiles, a hide or a low rating pushes the vectors away and excludes the
item), and the models are trained on the positive choices among them only
(`model_build.data.positive_choices`, applied by `collaborative_training.train`). What is
held out is every interaction, as split.py holds out every rating: validation asks what
the test asks. The blend
fit (model_build/blend.py) and the encoder's fine-tuning (model_build/finetune.py) are
both judged on this carve.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_build.data import Interaction


@dataclass(frozen=True)
class Validation:
    train: list[Interaction]
    held_out: dict[str, set[str]]
    cold_items: set[str]


def carve(interactions: Sequence[Interaction], test_share: float = 0.2, cold_share: float = 0.05,
          seed: int = 7) -> Validation:
    """split.py's protocol on these interactions: a share of items becomes new, each user's
    last `test_share` in time order is held out (new items included), and the new items'
    interactions are dropped from what is left to train on."""
    items = sorted({row.item_id for row in interactions}, key=lambda i: stable_hash(seed, "item", i))
    cold = set(items[: int(round(cold_share * len(items)))])
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in interactions:
        by_user[row.user_id].append(row)
    train_rows: list[Interaction] = []
    held_out: dict[str, set[str]] = {}
    for user, rows in by_user.items():
        rows = sorted(rows, key=lambda r: (r.timestamp, stable_hash(seed, user, r.item_id)))
        n_test = min(len(rows) - 1, max(1, math.ceil(test_share * len(rows))))
        head = [r for r in rows[:len(rows) - n_test] if r.item_id not in cold]
        if head:
            train_rows += head
            if n_test:  # a user with one interaction trains and is not asked (split.py)
                held_out[user] = {r.item_id for r in rows[len(rows) - n_test:]}
    return Validation(train_rows, held_out, cold)


def metrics(lists: dict[str, list[str]], held_out: dict[str, set[str]], cold: set[str]) -> dict[str, float]:
    """ndcg@10, recall@20, hr@10 and cold_recall@20 as shared/eval/score.py defines them,
    warm_recall@20: recall@20 counting only items that are not cold, and ndcg@10_se: the
    standard error of ndcg@10's mean over the users (the blend fit's tolerance)."""
    sums: dict[str, float] = defaultdict(float)
    ndcg = []
    cold_users = warm_users = 0
    for user, relevant in held_out.items():
        ranked = lists.get(user, [])
        hits = [1 if i in relevant else 0 for i in ranked[:20]]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits[:10]))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(relevant))))
        ndcg.append(dcg / ideal)
        sums["recall@20"] += sum(hits) / len(relevant)
        sums["hr@10"] += 1.0 if any(hits[:10]) else 0.0
        relevant_cold = relevant & cold
        if relevant_cold:
            cold_users += 1
            sums["cold_recall@20"] += sum(1 for i in ranked[:20] if i in relevant_cold) / len(relevant_cold)
        relevant_warm = relevant - cold
        if relevant_warm:
            warm_users += 1
            sums["warm_recall@20"] += sum(1 for i in ranked[:20] if i in relevant_warm) / len(relevant_warm)
    n = max(len(held_out), 1)
    sums["ndcg@10"] = sum(ndcg)
    result = {k: round(sums[k] / n, 5) for k in ("ndcg@10", "recall@20", "hr@10")}
    result["ndcg@10_se"] = round(float(np.std(ndcg, ddof=1) / math.sqrt(n)), 5) if len(ndcg) > 1 else 0.0
    result["cold_recall@20"] = round(sums["cold_recall@20"] / cold_users, 5) if cold_users else 0.0
    result["warm_recall@20"] = round(sums["warm_recall@20"] / warm_users, 5) if warm_users else 0.0
    return result


def stable_hash(seed: int, *parts: str) -> str:
    """A hex digest of the seed and parts: an order of ids the same on every run."""
    return hashlib.sha1(":".join((str(seed),) + parts).encode()).hexdigest()
