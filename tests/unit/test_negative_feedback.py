"""Negative feedback is negative everywhere: a hide, a dislike, a bounce or a low rating never
reads as a choice to the collaborative models, in the list or in its reasons."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from recsys import ranking
from recsys.collaborative import Collaborative
from recsys.events import Event
from recsys.index import ItemIndex
from recsys.profile import Profile, apply_events

DIM = 16
TASTES = {taste: [f"{taste}{i}" for i in range(8)] for taste in "abcd"}
NOW = 10_000.0
NEGATIVE: dict[str, dict[str, Any]] = {"dislike": {}, "hide": {}, "bounce": {"type": "click", "dwell_seconds": 1.0},
            "low rating": {"type": "rating", "value": 1.0}}


@pytest.fixture(scope="module")
def collaborative() -> Collaborative:
    """Four tastes of 8 items; taste 'a' the least chosen, so popularity alone never lists it."""
    rng = np.random.default_rng(11)
    item_ids = [i for items in TASTES.values() for i in items]
    vectors = rng.normal(size=(len(item_ids), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for n, (taste, items) in enumerate(TASTES.items()):
        for u in range(20 + 20 * n):
            chosen = [i for i in items if rng.random() < 0.7]
            rows += [Interaction(f"{taste}{u}", item, 4.5, 1_000 + t) for t, item in enumerate(chosen)]
    counts = {i: sum(r.item_id == i for r in rows) for i in item_ids}
    index = ItemIndex(DIM)
    index.extend(item_ids, vectors, np.array([counts[i] for i in item_ids], dtype=np.float32))
    model = train(rows, index, TrainingConfig(ease_l2=10.0, neighbours=10, factors=4, als_iterations=4,
                                              content_map_l2=0.1))
    return Collaborative(model, index)


def listed(collaborative: Collaborative, event_type: str, **fields) -> list[ranking.RankedItem]:
    profile = Profile("u")
    apply_events(profile, [Event("e1", "u", event_type, NOW, "a0", **fields)], lambda e: collaborative.index.vector(
        e.item_id))
    return ranking.rank(collaborative.index, profile, ranking.Request(10, NOW), collaborative=collaborative)


def named_in_reasons(items: list[ranking.RankedItem]) -> set[str]:
    return {i for item in items for reason in item.reasons for i in reason.get("items", [])}


@pytest.mark.parametrize("negative", NEGATIVE)
def test_a_negative_event_does_not_give_the_purchase_list(collaborative: Collaborative, negative: str) -> None:
    fields = dict(NEGATIVE[negative])
    purchased = listed(collaborative, "purchase")
    disliked = listed(collaborative, fields.pop("type", negative), **fields)
    assert sum(item.item_id in TASTES["a"] for item in purchased) == 7, "a purchase offers the rest of its taste"
    assert "a0" in named_in_reasons(purchased)
    shared = {i.item_id for i in purchased} & {i.item_id for i in disliked}
    assert len(shared) <= 2, (negative, [i.item_id for i in disliked])
    assert "a0" not in named_in_reasons(disliked) and "a0" not in {i.item_id for i in disliked}
    assert not {r["type"] for item in disliked for r in item.reasons} & {"similar_to_history", "chosen_alongside"}


def test_training_ignores_negative_feedback() -> None:
    """Users who disliked x and chose y: the item-item model learns nothing from x to y."""
    rows = [Interaction(f"u{u}", item, 4.0, t, kind) for u in range(30)
            for t, (item, kind) in enumerate([("x", "dislike"), ("y", "rating"), (f"f{u % 3}", "rating")])]
    rng = np.random.default_rng(3)
    index = ItemIndex(4)
    vectors = rng.normal(size=(5, 4)).astype(np.float32)
    index.extend(["x", "y", "f0", "f1", "f2"], vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.ones(5))
    model = train(rows, index, TrainingConfig(ease_l2=1.0, neighbours=4, factors=2, als_iterations=2))
    assert "x" not in model.item_ids
