"""Candidate retrieval (recsys.candidates, recsys.ranking.candidates): a catalog ranked through
candidates gives the list the whole-catalog scan gives, and the lists follow the live catalog.

The catalog is generated: 3,000 items in 40 clusters of 16-d vectors, users who choose within
one or two clusters (popular items more often), so the collaborative models, the new-item
transfer and the vector lists all have structure to find. `exact_max` is set to 0 to rank this
small catalog the way a large one is ranked."""
from __future__ import annotations

import numpy as np
import pytest

from model_build.blend import profiles_from
from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from recsys import ranking
from recsys.candidates import VectorLists
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.profile import Profile
from recsys.scoring import DEFAULT_WEIGHTS
from recsys.selection import parse_filters

DIM, ITEMS, CLUSTERS = 16, 3_000, 40
CONFIG = TrainingConfig(ease_l2=20.0, neighbours=30, factors=8, als_iterations=4, content_map_l2=1.0)


def catalog(seed: int = 1) -> tuple[ItemIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM))
    cluster = rng.integers(0, CLUSTERS, ITEMS)
    vectors = centres[cluster] + 0.6 * rng.normal(size=(ITEMS, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    index = ItemIndex(DIM)
    index.extend([f"i{r}" for r in range(ITEMS)], vectors, np.zeros(ITEMS),
                 [("even",) if r % 2 == 0 else ("odd",) for r in range(ITEMS)])
    return index, cluster


def choices(cluster: np.ndarray, users: int = 600, seed: int = 2) -> list[Interaction]:
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(cluster == c) for c in range(CLUSTERS)]
    rows = []
    for user in range(users):
        tastes = rng.choice(CLUSTERS, size=2, replace=False)
        for t in range(int(rng.integers(5, 40))):
            pool = members[tastes[0] if rng.random() < 0.7 else tastes[1]]
            # popular items (low ranks in the cluster) more often; a quarter of the catalog never chosen
            item = pool[min(len(pool) - 1, int(rng.zipf(1.6)) - 1) % max(1, (3 * len(pool)) // 4)]
            rows.append(Interaction(f"u{user}", f"i{item}", 4.5, 1_000 + 60 * t))
    return rows


@pytest.fixture(scope="module")
def served() -> tuple[ItemIndex, Collaborative, dict[str, Profile]]:
    index, cluster = catalog()
    interactions = choices(cluster)
    counts = np.bincount([int(row.item_id[1:]) for row in interactions], minlength=ITEMS)
    index.set_live_counts(index.ids, counts.astype(np.float64), None)
    collaborative = Collaborative(train(interactions, index, CONFIG), index)
    return index, collaborative, profiles_from(interactions, index)


def both(index: ItemIndex, profile: Profile | None, request: ranking.Request,
         collaborative: Collaborative | None) -> tuple[list[ranking.RankedItem], list[ranking.RankedItem]]:
    index.exact_max = 10**9
    exact = ranking.rank(index, profile, request, DEFAULT_WEIGHTS, collaborative)
    index.exact_max = 0
    try:
        return exact, ranking.rank(index, profile, request, DEFAULT_WEIGHTS, collaborative)
    finally:
        index.exact_max = 10**9


def test_the_candidates_give_the_exact_list(served: tuple[ItemIndex, Collaborative, dict[str, Profile]]) -> None:
    index, collaborative, profiles = served
    recall, users = [], sorted(profiles)[:40]
    for at, user in enumerate(users):
        profile = profiles[user]
        context = index.vectors[at * 7] if at % 2 else None  # half the requests carry a context
        request = ranking.Request(50, now=profile.last_event_at or 0.0, context=context)
        exact, approximate = both(index, profile, request, collaborative)
        recall.append(len({i.item_id for i in exact} & {i.item_id for i in approximate}) / len(exact))
        exact_score = {i.item_id: i.score for i in exact}
        for item in approximate:  # re-scored exactly: an item on both lists has the same score
            if item.item_id in exact_score:
                assert item.score == pytest.approx(exact_score[item.item_id], abs=1e-5)
        assert not {i.item_id for i in approximate} & profile.consumed
    assert np.mean(recall) >= 0.98, recall


def test_candidates_of_many_weightings_are_the_union_of_each(served: tuple[ItemIndex, Collaborative,
                                                                         dict[str, Profile]]) -> None:
    """The blend fit asks for the candidates of a weighting and of each signal alone in one
    call (`also`): the same rows as asking for each weighting's in turn."""
    from dataclasses import replace

    from model_build.blend import ALONE

    index, collaborative, profiles = served
    also = (*(replace(DEFAULT_WEIGHTS, **only) for only in ALONE.values()),
            replace(DEFAULT_WEIGHTS, recency_half_life=2.0, recency_floor=0.5))
    grew = []
    for at, user in enumerate([None, *sorted(profiles)[:10]]):
        profile = profiles[user] if user else None
        request = ranking.Request(50, now=profile.last_event_at or 0.0 if profile else 0.0,
                                  context=index.vectors[at * 7] if at % 2 else None)
        each = [ranking.candidates(index, profile, request, w, collaborative) for w in (DEFAULT_WEIGHTS, *also)]
        together = ranking.candidates(index, profile, request, DEFAULT_WEIGHTS, collaborative, also=also)
        np.testing.assert_array_equal(together, np.unique(np.concatenate(each)))
        assert len(together) < ITEMS
        grew.append(len(together) > len(each[0]))
    assert any(grew), "the other weightings add candidates for someone"


def test_filters_and_retired_items_hold_on_candidates(served: tuple[ItemIndex, Collaborative, dict[str, Profile]]
                                                      ) -> None:
    index, collaborative, profiles = served
    profile = profiles["u3"]
    exact, _ = both(index, profile, ranking.Request(10, now=profile.last_event_at or 0.0), collaborative)
    retired, excluded = exact[0].item_id, exact[1].item_id
    index.update(retired, available=False)
    try:
        request = ranking.Request(20, now=profile.last_event_at or 0.0,
                                  filters=parse_filters(categories="even", exclude=excluded))
        exact, approximate = both(index, profile, request, collaborative)
        listed = [i.item_id for i in approximate]
        assert retired not in listed and excluded not in listed
        assert all(int(i[1:]) % 2 == 0 for i in listed) and len(listed) == 20
        assert len(set(listed) & {i.item_id for i in exact}) >= 19
    finally:
        index.update(retired, available=True)


def test_an_item_added_after_the_build_is_a_candidate(served: tuple[ItemIndex, Collaborative, dict[str, Profile]]
                                                      ) -> None:
    index, collaborative, _ = served
    lists = index.candidate_lists()
    vector = -index.vectors[5]  # far from item 5, near whatever lies opposite
    index.upsert("added", vector)
    request = ranking.Request(5, now=0.0, context=vector)
    exact, approximate = both(index, None, request, collaborative)
    assert index.lists is lists, "an upsert extends the lists, never rebuilds them"
    assert approximate[0].item_id == exact[0].item_id == "added"
    moved = index.vectors[9]
    index.upsert("added", moved)  # its vector changes: it is listed where it now belongs
    assert ranking.similar(index, "i9", 1) == [("added", pytest.approx(1.0, abs=0.005))]


def test_similar_through_candidates_matches_the_scan(served: tuple[ItemIndex, Collaborative, dict[str, Profile]]
                                                     ) -> None:
    index, _, _ = served
    overlap = []
    for item in [f"i{r}" for r in range(0, ITEMS, 150)]:
        index.exact_max = 10**9
        exact = {i for i, _ in ranking.similar(index, item, 10) or []}
        index.exact_max = 0
        approximate = {i for i, _ in ranking.similar(index, item, 10) or []}
        index.exact_max = 10**9
        overlap.append(len(exact & approximate) / 10)
    assert np.mean(overlap) >= 0.98


def test_the_lists_travel_with_the_index() -> None:
    index, _ = catalog()
    index.exact_max = 0
    built = index.candidate_lists()
    loaded, _ = ItemIndex.from_npz(index.to_npz())
    assert loaded.lists is not None
    np.testing.assert_array_equal(loaded.lists.centroids, built.centroids)
    np.testing.assert_array_equal(loaded.lists.assignment(ITEMS), built.assignment(ITEMS))
    assert loaded.ids == index.ids and loaded.categories == index.categories
    np.testing.assert_array_equal(loaded.vectors, index.vectors)


def test_kmeans_lists_partition_the_rows() -> None:
    index, cluster = catalog()
    lists = VectorLists.build(len(index), index.vectors_at, lists=CLUSTERS)
    assert sorted(lists.members.tolist()) == list(range(ITEMS))
    # items of one generated cluster mostly share a list
    assignment = lists.assignment(ITEMS)
    purity = [np.bincount(assignment[cluster == c]).max() / np.count_nonzero(cluster == c) for c in range(CLUSTERS)]
    assert np.mean(purity) > 0.7
    whole = lists.probe(index.vectors[:1], probe=CLUSTERS)
    assert len(whole) == ITEMS
