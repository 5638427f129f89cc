"""Filters, diversity, exploration, variants and reasons on small synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from recsys import experiments, selection
from recsys.index import ItemIndex
from recsys.reasons import explain
from recsys.scoring import BlendWeights


def index_of(n: int = 8) -> ItemIndex:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(4)
    index.extend([f"i{n}" for n in range(n)], vectors, np.arange(n, dtype=np.float32) * 10,
                 [("Horror",) if r % 2 else ("Comedy", "Drama") for r in range(n)],
                 [{"year": 1990 + r, "lang": "en" if r < 4 else "fr"} for r in range(n)])
    return index


def test_filters_combine():
    index = index_of()
    f = selection.parse_filters(exclude="i1", categories="Horror", attributes="lang:en", minimum="year:1991")
    assert [index.ids[r] for r in np.flatnonzero(selection.allowed(index, f))] == ["i3"]
    f = selection.parse_filters(exclude_categories="Horror", maximum="year:1994")
    assert [index.ids[r] for r in np.flatnonzero(selection.allowed(index, f, {"i2"}))] == ["i0", "i4"]
    f = selection.parse_filters(include_consumed=True)
    assert selection.allowed(index, f, {"i2"}).all()


@pytest.mark.parametrize("bad", [{"attributes": "year"}, {"minimum": "year:soon"}, {"maximum": "year:inf"},
                                 {"exclude": ",".join(map(str, range(501)))}])
def test_bad_filters_are_refused(bad):
    with pytest.raises(ValueError):
        selection.parse_filters(**bad)


def test_diversity_trades_relevance_for_spread():
    index = ItemIndex(2)
    index.extend(["a", "a2", "b"], np.array([[1, 0], [1, 0], [0, 1]], np.float32), np.zeros(3))
    scores = np.array([1.0, 0.99, 0.5])
    assert list(selection.diversify(index, scores, np.array([0, 1, 2]), 2, 0.0)) == [0, 1]
    assert list(selection.diversify(index, scores, np.array([0, 1, 2]), 2, 0.5)) == [0, 2]


def test_explore_takes_its_share_of_slots_with_items_shown_little():
    index = index_of()
    shown = np.array([500, 400, 300, 5, 200, 100, 21, 20], dtype=np.float64)
    index.set_live_counts(index.ids, index.counts.copy(), np.zeros(len(index)), shown)
    scores = np.linspace(1, 0, len(index))  # the most shown items score best
    rows, explored = selection.select(index, scores, np.ones(len(index), bool), 4, 0.0, 0.5,
                                      np.random.default_rng(1))
    assert explored == {3, 7}, "i3 and i7 are shown at most FRESH_MAX_IMPRESSIONS times; i6 once more"
    assert len(rows) == 4 and len(set(rows)) == 4 and rows[:2] == [0, 3]
    assert selection.explore_slots(10, 0.2) == [2, 7] and selection.explore_slots(10, 0.0) == []


def test_explore_respects_the_filters_and_needs_no_counters():
    index = index_of()
    scores = np.linspace(1, 0, len(index))
    no_horror = selection.allowed(index, selection.parse_filters(exclude_categories="Horror"))
    _, explored = selection.select(index, scores, no_horror, 4, 0.0, 0.5, np.random.default_rng(1))
    assert len(explored) == 2 and all(index.categories[r] == ("Comedy", "Drama") for r in explored), \
        "before any counters every item has 0 impressions: the filters alone decide"
    index.set_live_counts(index.ids, index.counts.copy(), np.zeros(len(index)), np.full(len(index), 50.0))
    rows, explored = selection.select(index, scores, no_horror, 4, 0.0, 0.5, np.random.default_rng(1))
    assert explored == set() and len(rows) == 4, "nothing fresh: the slots go to the best-scored items"


def test_variants_are_stable_and_split_by_share():
    variants = experiments.parse_variants(
        '[{"name": "a", "share": 0.3}, {"name": "b", "share": 0.7, "weights": {"popularity": 0.5}}]')
    names = [experiments.assign(f"user-{n}", variants).name for n in range(4000)]
    assert names == [experiments.assign(f"user-{n}", variants).name for n in range(4000)]
    assert 0.26 < names.count("a") / 4000 < 0.34
    assert variants[1].blend(BlendWeights()).popularity == 0.5
    with pytest.raises(ValueError):
        experiments.parse_variants('[{"name": "a", "share": 0.5}]')
    assert experiments.parse_variants("") == experiments.CONTROL


def test_reasons_come_from_the_components():
    index = index_of()
    parts = {"popularity": np.linspace(0, 1, len(index)), "context": np.linspace(1, 0, len(index))}
    weights = BlendWeights(context=5.0, cold_popularity=1.0)
    first, last = explain(index, {name: values[[0, 7]] for name, values in parts.items()}, weights, [0, 7],
                          explored={7}, context="space")
    assert [r["type"] for r in first] == ["context"] and "space" in first[0]["text"]
    assert first[0]["contribution"] == pytest.approx(5.0) and first[0]["share"] == 1.0
    assert [r["type"] for r in last] == ["explored", "popular"]


def test_every_item_of_a_cold_users_filtered_list_has_a_reason():
    """A cold user's list is popularity (and context); items far down a filtered list, with
    no interactions, still say why they are there: their strongest component."""
    from recsys import ranking

    index = index_of(12)
    index.set_live_counts(index.ids, np.array([50, 40, 30, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float64),
                          np.zeros(12), np.zeros(12))
    request = ranking.Request(k=10, now=0.0, filters=selection.parse_filters(categories="Comedy", exclude="i0,i2"))
    listed = ranking.rank(index, None, request)
    assert len(listed) == 4 and all(item.reasons for item in listed)
    assert {r["type"] for item in listed for r in item.reasons} <= {"popular", "trending", "context"}
    context = index.vectors[5] * -1.0  # negative cosine to some items: still their strongest component
    request = ranking.Request(k=10, now=0.0, context=context, context_text="x")
    listed = ranking.rank(index, None, request, BlendWeights(context=5.0, cold_popularity=0.0))
    assert len(listed) == 10 and all(item.reasons for item in listed)


def test_an_item_with_no_positive_component_gets_its_strongest_one():
    index = index_of()
    parts = {"popularity": np.zeros(len(index)), "context": np.linspace(-0.5, -0.1, len(index))}
    weights = BlendWeights(context=5.0, cold_popularity=1.0)
    (only,) = explain(index, {name: values[[3]] for name, values in parts.items()}, weights, [3])
    assert [r["type"] for r in only] == ["popular"] and only[0]["share"] == 0.0, \
        "popularity 0 beats a negative context share"
