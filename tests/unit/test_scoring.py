"""recsys.scoring and recsys.ranking over a small synthetic ItemIndex."""
from __future__ import annotations

import numpy as np
import pytest

from recsys.index import ItemIndex
from recsys.profile import DEFAULT_CONFIG, Profile
from recsys.ranking import similar
from recsys.scoring import popularity
from tests.served import served_list as recommend

DIM = 8
NOW = 1_700_000_000.0


def random_index(n: int = 20, counts: np.ndarray | None = None, seed: int = 7) -> ItemIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(DIM)
    index.extend([f"i{n}" for n in range(n)], vectors, np.zeros(n) if counts is None else counts)
    return index


def basis_index(counts: list[float]) -> ItemIndex:
    index = ItemIndex(DIM)
    index.extend([f"i{n}" for n in range(DIM)], np.eye(DIM, dtype=np.float32), np.array(counts))
    return index


def ids(results: list[tuple[str, float]]) -> list[str]:
    return [item_id for item_id, _ in results]


def taste(vector: np.ndarray, consumed: set[str] = frozenset()) -> Profile:
    return Profile("u", long_term=3 * vector, consumed=set(consumed), last_event_at=NOW)


def nearest(index: ItemIndex, vector: np.ndarray) -> list[str]:
    return [index.ids[r] for r in np.argsort(-(index.vectors @ vector), kind="stable")]


def test_cold_user_gets_items_by_popularity() -> None:
    counts = [5, 100, 0, 20, 1, 50, 2, 10]
    results = recommend(basis_index(counts), None, None, k=4, now=NOW)
    assert ids(results) == ["i1", "i5", "i3", "i7"]


def test_a_profile_ranks_the_nearest_items_first() -> None:
    index = random_index()
    target = index.vector("i4")
    results = recommend(index, taste(target), None, k=5, now=NOW)
    assert ids(results) == nearest(index, target)[:5]
    assert ids(results)[0] == "i4"


def test_consumed_and_excluded_items_are_left_out() -> None:
    index = random_index()
    target = index.vector("i4")
    expected = [i for i in nearest(index, target) if i not in {"i4", "i9"}][:5]
    results = recommend(index, taste(target, consumed={"i4"}), None, k=5, now=NOW, exclude={"i9", "unknown"})
    assert ids(results) == expected


def test_context_shifts_the_ranking() -> None:
    index = basis_index([100, 0, 0, 0, 0, 1, 0, 0])
    assert ids(recommend(index, None, None, k=1, now=NOW)) == ["i0"]
    assert ids(recommend(index, None, index.vector("i5").copy(), k=1, now=NOW)) == ["i5"]


def test_a_stale_session_is_ignored() -> None:
    index = basis_index([0, 0, 0, 9, 0, 0, 0, 0])
    profile = Profile("u", session=np.eye(DIM, dtype=np.float32)[6], last_event_at=NOW)
    assert ids(recommend(index, profile, None, k=1, now=NOW)) == ["i6"]
    later = NOW + DEFAULT_CONFIG.session_gap_seconds + 1
    assert ids(recommend(index, profile, None, k=1, now=later)) == ["i3"]


def test_k_larger_than_the_candidates() -> None:
    index = random_index(n=6)
    results = recommend(index, taste(index.vector("i0"), consumed={"i0", "i1"}), None, k=50, now=NOW)
    assert sorted(ids(results)) == ["i2", "i3", "i4", "i5"]
    assert recommend(index, None, None, k=0, now=NOW) == []


def test_scores_are_sorted_descending() -> None:
    index = random_index(counts=np.arange(20, dtype=float))
    results = recommend(index, taste(index.vector("i2")), index.vector("i11").copy(), k=20, now=NOW)
    scores = [score for _, score in results]
    assert len(results) == 20 and len(set(ids(results))) == 20
    assert scores == sorted(scores, reverse=True)


def test_similar_excludes_the_item_and_returns_nearest_first() -> None:
    index = random_index()
    results = similar(index, "i3", k=4)
    assert ids(results) == nearest(index, index.vector("i3"))[1:5]
    assert "i3" not in ids(results)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(index.vector("i3") @ index.vector(ids(results)[0])), abs=1e-5)


def test_similar_of_an_unknown_item_is_none() -> None:
    assert similar(random_index(), "nope", k=5) is None


def test_popularity_is_in_0_1() -> None:
    pop = popularity(basis_index([0, 1, 10, 1000, 3, 3, 0, 7]))
    assert pop.min() == 0 and pop.max() == 1 and pop[3] == 1
    assert np.all(np.diff(pop[[0, 1, 2, 3]]) > 0)
    assert np.all(popularity(basis_index([0] * DIM)) == 0)
    assert len(popularity(ItemIndex(DIM))) == 0
