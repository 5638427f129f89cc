"""The validation carve and its metrics (model_build.validation), the blend's context weight, and the report page."""
from __future__ import annotations

import math

import pytest

from model_build.blend import with_context
from model_build.data import Interaction
from model_build.report import render
from model_build.validation import carve, metrics
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights


def history(users: int = 20, items: int = 40) -> list[Interaction]:
    return [Interaction(f"u{u}", f"i{(u * 7 + t) % items}", 4.0, 1_000 + t) for u in range(users) for t in range(10)]


def test_the_carve_follows_split_py_new_items_and_each_users_latest() -> None:
    rows = history()
    validation = carve(rows, test_share=0.2, cold_share=0.1)
    assert len(validation.cold_items) == 4
    assert not {r.item_id for r in validation.train} & validation.cold_items
    assert set(validation.held_out) == {r.user_id for r in rows}
    for user, held in validation.held_out.items():
        mine = sorted((r for r in rows if r.user_id == user), key=lambda r: r.timestamp)
        n_test = math.ceil(0.2 * len(mine))
        assert held == {r.item_id for r in mine[-n_test:]}  # new items too, as split.py's test.csv
        kept = [r.item_id for r in validation.train if r.user_id == user]
        assert kept == [r.item_id for r in mine[:-n_test] if r.item_id not in validation.cold_items]


def test_metrics_follow_score_py() -> None:
    held_out = {"a": {"x", "cold"}, "b": {"y"}}
    lists = {"a": ["x", "q", "cold"], "b": ["q", "r"]}
    figures = metrics(lists, held_out, cold={"cold"})
    ideal_a = 1 + 1 / math.log2(3)
    assert figures["ndcg@10"] == pytest.approx(round((1 + 1 / 2) / ideal_a / 2, 5))
    assert figures["recall@20"] == 0.5 and figures["hr@10"] == 0.5
    assert figures["cold_recall@20"] == 1.0 and figures["warm_recall@20"] == 0.5


def test_the_report_page_charts_every_variant() -> None:
    variant = {"ndcg@10": 0.1, "recall@20": 0.2, "hr@10": 0.5, "cold_recall@20": 0.01, "warm_recall@20": 0.2}
    page = render({"validation": {"blend": variant, "popularity alone": dict(variant, **{"ndcg@10": 0.05})},
                   "weights": {"item_item": 2.0}, "seconds": {"ranking": 1.0}, "users": 3, "items": 9})
    assert page.count("<svg") == 5 and "popularity alone" in page and "0.0500" in page
    assert "cold items (no interactions)" in page


def test_the_fitted_context_weight_keeps_its_share_of_the_collaborative_weights() -> None:
    fitted = with_context(BlendWeights(item_item=0.5, sequence=1.0, factors=0.0, context=99.0))
    assert fitted.context == pytest.approx(2.5 * 1.5) and fitted.item_item == 0.5
    assert with_context(DEFAULT_WEIGHTS) == DEFAULT_WEIGHTS
    content_only = with_context(BlendWeights(item_item=0.0, sequence=0.0, factors=0.0, long_term=1.0, session=0.0))
    assert content_only.context == pytest.approx(2.5)
