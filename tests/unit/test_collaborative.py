"""The collaborative models: trained by model_build/collaborative.py on tiny synthetic
tastes, scored by recsys/collaborative.py and recsys/scoring.py."""
from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import numpy as np
import pytest

from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from recsys.collaborative import ArtifactMismatch, Collaborative, CollaborativeModel, ItemRows, history_weights
from recsys.index import ItemIndex
from recsys.profile import VETO, Profile
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights
from tests.served import served_list as recommend

DIM = 8
SMALL = TrainingConfig(ease_l2=10.0, neighbours=6, factors=2, als_regularization=10.0, als_iterations=8,
                       content_map_l2=0.1)
GROUPS = {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(5)]}


def interactions(users_per_group: int = 100, seed: int = 3) -> list[Interaction]:
    """Two tastes: 'a' users choose each a item with probability 0.8 (b users, b items),
    and now and then one item of the other taste."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, other in (("a", "b"), ("b", "a")):
        for u in range(users_per_group):
            chosen = [i for i in GROUPS[group] if rng.random() < 0.8]
            chosen += [str(rng.choice(GROUPS[other]))] if rng.random() < 0.2 else []
            rows += [Interaction(f"{group}{u}", item, 4.0, 1_000 + t) for t, item in enumerate(chosen)]
    return rows


def index_with(item_ids: list[str], seed: int = 5) -> ItemIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(item_ids), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(DIM)
    index.extend(item_ids, vectors, np.ones(len(item_ids)))
    return index


@pytest.fixture(scope="module")
def model() -> CollaborativeModel:
    return train(interactions(), index_with(GROUPS["a"] + GROUPS["b"]), SMALL)


@pytest.fixture()
def collaborative(model: CollaborativeModel) -> Collaborative:
    return Collaborative(model, index_with(GROUPS["a"] + GROUPS["b"]))


def ranked(collaborative: Collaborative, scores: np.ndarray, skip: set[str]) -> list[str]:
    order = [collaborative.index.ids[r] for r in np.argsort(-scores, kind="stable")]
    return [i for i in order if i not in skip]


@pytest.mark.parametrize("component", ["item_item", "sequence", "factors"])
def test_a_user_is_offered_the_rest_of_their_taste_first(collaborative: Collaborative, component: str) -> None:
    history = {"a0": 1.0, "a1": 1.0}
    scores, _ = getattr(collaborative, component)(history)
    assert set(ranked(collaborative, scores, set(history))[:3]) == {"a2", "a3", "a4"}


def test_the_sequence_model_reads_what_was_chosen_close_together() -> None:
    """Everyone chose x, then y at once, then fillers, and z long after: the whole-history
    model ties y and z, the sequence model puts y first."""
    fillers = [f"f{i}" for i in range(6)]
    rows = [Interaction(f"u{u}", item, 4.0, t) for u in range(40)
            for t, item in enumerate(["x", "y", *fillers[u % 3:u % 3 + 3], "z"])]
    index = index_with(["x", "y", "z", *fillers])
    collaborative = Collaborative(train(rows, index, replace(SMALL, sequence_window=2)), index)
    sequence, _ = collaborative.sequence({"x": 1.0})
    assert sequence[index.rows["y"]] > 0 and sequence[index.rows["z"]] == 0
    [(item, value)] = collaborative.contributions({"x": 1.0}, [index.rows["y"]], component="sequence")[index.rows["y"]]
    assert item == "x" and value > 0


def test_fold_in_serves_a_user_the_model_never_saw(collaborative: Collaborative) -> None:
    """Users b0..b99 trained the model; a user made of b items only is folded in at request time."""
    user, bias = collaborative.fold_in({"b3": 1.0, "b4": 1.0})
    assert user.shape == (SMALL.factors,) and np.isfinite(bias)
    top = ranked(collaborative, collaborative.factors({"b3": 1.0, "b4": 1.0})[0], {"b3", "b4"})[:3]
    assert set(top) == {"b0", "b1", "b2"}


def test_no_known_history_gives_no_collaborative_score(collaborative: Collaborative) -> None:
    assert collaborative.item_item({"unknown": 1.0}) is None
    assert collaborative.factors({}) is None


def near(index: ItemIndex, item_id: str, other: str) -> np.ndarray:
    twin = index.vector(item_id) + 0.05 * index.vector(other)
    return (twin / np.linalg.norm(twin)).astype(np.float32)


@pytest.mark.parametrize("component", ["item_item", "sequence", "factors"])
def test_a_new_item_is_scored_from_its_vector_like_the_items_it_resembles(collaborative: Collaborative,
                                                                          component: str) -> None:
    index = collaborative.index
    index.upsert("a2-remastered", near(index, "a2", "b0"), 0.0)
    index.upsert("b0-remastered", near(index, "b0", "a2"), 0.0)
    score = getattr(collaborative, component)  # the first call aligns the grown index
    known, predicted = score({"a0": 1.0, "a1": 1.0})
    a_twin, b_twin = index.rows["a2-remastered"], index.rows["b0-remastered"]
    assert known[a_twin] == known[b_twin] == 0.0 and np.count_nonzero(predicted) == 2
    assert predicted[a_twin] > max(known[index.rows[b]] for b in GROUPS["b"])
    assert predicted[a_twin] > predicted[b_twin]
    _, predicted = score({"b1": 1.0, "b2": 1.0})
    assert predicted[b_twin] > predicted[a_twin]


def test_a_new_item_whose_vector_changes_borrows_from_its_new_neighbours(model: CollaborativeModel) -> None:
    """An item upserted with a vector like a2's, then re-encoded like b0 (its text was edited):
    after `revise` its scores are what a model aligned from scratch gives, not the old ones."""
    index = index_with(GROUPS["a"] + GROUPS["b"])
    collaborative = Collaborative(model, index)
    index.upsert("edited", near(index, "a2", "b0"), 0.0)
    before, = collaborative.item_item({"a0": 1.0, "a1": 1.0})[1:]
    index.upsert("edited", near(index, "b0", "a2"), 0.0)
    collaborative.revise([index.rows["edited"]])
    after, = collaborative.item_item({"a0": 1.0, "a1": 1.0})[1:]
    fresh, = Collaborative(model, index).item_item({"a0": 1.0, "a1": 1.0})[1:]
    row = index.rows["edited"]
    assert after[row] == pytest.approx(fresh[row]) and after[row] < before[row]


def test_a_new_item_that_resembles_a_popular_one_is_predicted_popular() -> None:
    """a0 is chosen by every user, a1 by one in ten: twins of each, new, inherit that."""
    rows = [Interaction(f"u{u}", "a0", 4.0, 1) for u in range(100)]
    rows += [Interaction(f"u{u}", GROUPS["a"][2 + u % 3], 4.0, 2) for u in range(100)]
    rows += [Interaction(f"u{u}", "a1", 4.0, 3) for u in range(0, 100, 10)]
    index = index_with(GROUPS["a"])
    collaborative = Collaborative(train(rows, index, SMALL), index)
    index.upsert("a0-twin", near(index, "a0", "a1"), 0.0)
    index.upsert("a1-twin", near(index, "a1", "a0"), 0.0)
    predicted = collaborative.new_item_popularity()
    assert predicted[index.rows["a0-twin"]] > predicted[index.rows["a1-twin"]] > 0
    assert np.count_nonzero(predicted) == 2 and predicted.max() <= 1.0


def test_a_model_for_other_item_vectors_is_refused(model: CollaborativeModel) -> None:
    index = ItemIndex(DIM * 2)
    with pytest.raises(ArtifactMismatch, match="item vectors of dimension 8, the index holds 16"):
        Collaborative(model, index)


def test_the_latest_choices_weigh_most_by_what_the_user_did() -> None:
    profile = Profile("u", history={"old": 1.0, "a": 1.0, "disliked": VETO, "b": 2.0, "bounced": -0.3, "c": 1.0})
    weights = history_weights(profile, half_life_items=1.0, floor=0.2)
    assert weights == pytest.approx({"c": 1.2, "b": 1.4, "a": 0.45, "old": 0.325})


def test_recommend_blends_collaborative_scores_and_leaves_out_consumed(collaborative: Collaborative) -> None:
    profile = Profile("u", recent_items=["a1", "a0"], consumed={"a0", "a1"}, history={"a0": 1.0, "a1": 1.0},
                      last_event_at=1_000.0)
    weights = BlendWeights(long_term=0.0, session=0.0, popularity=0.0)
    top = recommend(collaborative.index, profile, None, 3, now=1_000.0, weights=weights,
                    collaborative=collaborative)
    assert {item for item, _ in top} == {"a2", "a3", "a4"}


def test_artifact_round_trips_with_its_blend(model: CollaborativeModel) -> None:
    loaded, meta = CollaborativeModel.from_npz(model.to_npz(blend=DEFAULT_WEIGHTS.to_json()))
    assert loaded.item_ids == model.item_ids
    for name in CollaborativeModel.ROW_MODELS:
        for field in ItemRows.FIELDS:
            np.testing.assert_array_equal(getattr(getattr(loaded, name), field), getattr(getattr(model, name), field))
    np.testing.assert_array_equal(loaded.factors, model.factors)
    np.testing.assert_array_equal(loaded.factor_map, model.factor_map)
    np.testing.assert_array_equal(loaded.popularity_map, model.popularity_map)
    assert BlendWeights.from_json(str(meta["blend"])) == DEFAULT_WEIGHTS


def test_mismatched_artifacts_are_refused(model: CollaborativeModel) -> None:
    with pytest.raises(ArtifactMismatch, match="item ids but item_item arrays"):
        replace(model, item_ids=model.item_ids[:-1])
    with pytest.raises(ArtifactMismatch, match="sequence directions shaped"):
        replace(model, sequence=replace(model.sequence, directions=model.sequence.directions[:, :-1]))
    # Rows out of range are found when a request reads them: checking every row at load would
    # page in the whole (memory-mapped) model, what a large catalog's cold start avoids.
    shifted = replace(model, sequence=replace(model.sequence, rows=model.sequence.rows + 100))
    with pytest.raises(ArtifactMismatch, match="sequence rows out of range"):
        Collaborative(shifted, index_with(GROUPS["a"] + GROUPS["b"])).sequence({"a0": 1.0})
    with pytest.raises(ArtifactMismatch, match="factor map shaped"):
        replace(model, factor_map=model.factor_map[:, :-1])
    with pytest.raises(ArtifactMismatch, match="popularity map shaped"):
        replace(model, popularity_map=model.popularity_map[:-1])
    with pytest.raises(ValueError, match="keys among"):
        BlendWeights.from_json('{"popularity": 1, "magic": 2}')


def test_a_history_direction_is_the_sum_of_its_rows_directions(collaborative: Collaborative) -> None:
    """The stored per-row directions give what summing the reached items' vectors gives:
    (sums x V) @ projection, up to their int8 rounding."""
    history = {"a0": 1.0, "b1": 0.5, "a3": 0.25}
    index, model = collaborative.index, collaborative.model
    for name in CollaborativeModel.ROW_MODELS:
        targets, sums, direction = collaborative._reach(name, history)
        vectors = index.vectors_at(np.array([index.rows[model.item_ids[t]] for t in targets]))
        expected = (sums.astype(np.float32) @ vectors) @ getattr(model, name).projection
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(direction, expected, atol=0.02 * np.abs(expected).max())


def test_training_needs_interactions() -> None:
    with pytest.raises(ValueError, match="no interactions"):
        train([], index_with(["a0"]), SMALL)


def test_the_build_computes_the_transfer_of_its_catalog_items_without_evidence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An item in the catalog the model never saw chosen borrows as the build matched it: a
    serving process matches none at start (its cost would grow with the catalog) and scores
    it as it would an item upserted later."""
    catalog = index_with(GROUPS["a"] + GROUPS["b"])
    catalog.upsert("a2-twin", near(catalog, "a2", "b0"), 0.0)
    model = train(interactions(), catalog, SMALL)
    assert model.transfer.item_ids == ["a2-twin"] and model.transfer.weights.sum() == pytest.approx(1.0)
    later = index_with(GROUPS["a"] + GROUPS["b"])
    matched_later = Collaborative(model, later)
    later.upsert("a2-twin", catalog.vector("a2-twin"), 0.0)
    expected = matched_later.item_item({"a0": 1.0})[1][later.rows["a2-twin"]]
    monkeypatch.setattr("recsys.collaborative.nearest_of", lambda *args, **kwargs: pytest.fail("matched"))
    served = Collaborative(model, catalog).item_item({"a0": 1.0})[1][catalog.rows["a2-twin"]]
    assert served == pytest.approx(expected) and served > 0


@pytest.mark.parametrize("low_precision", [False, True])
def test_the_builds_transfer_finds_the_exact_nearest_known_items(low_precision: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The build matches items without evidence through a shortlist of the products (in bfloat16
    where that is faster) scored again in float32: the neighbours and weights are those of an
    exact float32 search, `nearest_of` over every known item, as a serving process finds them."""
    from model_build import collaborative_training
    from recsys.collaborative import nearest_of

    rng = np.random.default_rng(5)
    dim, known_n, cold_n = 32, 400, 90
    vectors = rng.normal(size=(known_n + cold_n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(dim, capacity=known_n + cold_n)
    index.extend([f"i{r}" for r in range(known_n + cold_n)], vectors, np.zeros(known_n + cold_n, np.float32))
    rows = [Interaction(f"u{r % 50}", f"i{r}", 5.0, r) for r in range(known_n)]
    histories = collaborative_training.read_histories(rows)
    at = np.array([index.rows[i] for i in histories.item_ids], dtype=np.int64)
    monkeypatch.setattr(collaborative_training, "bfloat16_is_faster", lambda table, low: low_precision)
    transfer = collaborative_training.new_item_transfer(index, histories, at, replace(SMALL, transfer_candidates=300))
    assert transfer.item_ids == [f"i{r}" for r in range(known_n, known_n + cold_n)]
    exact = index.vectors_at(np.arange(known_n, known_n + cold_n)) @ index.vectors_at(at[:300]).T
    nearest, weights = nearest_of(exact)  # positions among the 300 most chosen: their model rows
    assert [sorted(r) for r in transfer.rows.tolist()] == [sorted(r) for r in nearest.tolist()]
    for got_rows, got, want_rows, want in zip(transfer.rows, transfer.weights, nearest, weights, strict=True):
        np.testing.assert_allclose(got[np.argsort(got_rows)], want[np.argsort(want_rows)], rtol=1e-5)


def test_a_model_read_from_disk_scores_alike(model: CollaborativeModel, tmp_path) -> None:
    """Read from a file (memory-mapped: tests/unit/test_artifacts.py), the model scores as the
    bytes-loaded one does."""
    path = tmp_path / "collaborative.npz"
    path.write_bytes(model.to_npz())
    mapped, _ = CollaborativeModel.from_npz(path)
    history = {"a0": 1.0, "a1": 0.5}
    index = index_with(GROUPS["a"] + GROUPS["b"])
    for got, want in zip(Collaborative(mapped, index).item_item(history) or (),
                         Collaborative(model, index).item_item(history) or (), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("component", ["item_item", "sequence", "factors"])
def test_items_with_little_evidence_move_from_their_mapped_score_to_the_models(component: str) -> None:
    """a4 is chosen by 3 users, the other items by many: under an evidence prior k, a4 keeps
    3 / (3 + k) of its model score and takes k / (3 + k) of its mapped one, a well-chosen item
    stays near its model score, and k 0 leaves every score as the model gives it."""
    rows = [row for row in interactions() if row.item_id != "a4" or row.user_id in {"a0", "a1", "a2"}]
    index = index_with(GROUPS["a"] + GROUPS["b"])
    model = train(rows, index, SMALL)
    assert model.evidence is not None and model.evidence[model.item_ids.index("a4")] == 3
    collaborative = Collaborative(model, index)
    score = getattr(collaborative, component)
    history = {"a0": 1.0, "a1": 1.0}
    plain, plain_predicted = score(history)
    assert not plain_predicted.any()  # every item has evidence: nothing is predicted without a prior
    at_zero = score(history, evidence_prior=0.0)
    np.testing.assert_array_equal(at_zero[0], plain)
    _, mapped = score(history, evidence_prior=np.inf)  # every item at its mapped score alone
    few, many = index.rows["a4"], index.rows["a2"]
    for k in (1.0, 10.0):
        known, predicted = score(history, evidence_prior=k)
        assert known[few] == pytest.approx(3 / (3 + k) * plain[few], rel=1e-5, abs=1e-7)
        assert predicted[few] == pytest.approx(k / (3 + k) * mapped[few], rel=1e-5, abs=1e-7)
        c = model.evidence[model.item_ids.index("a2")]
        assert known[many] == pytest.approx(c / (c + k) * plain[many], rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(collaborative.evidence_share(3.0)[[few, many]], [0.5, c / (c + 3.0)], rtol=1e-6)


@pytest.mark.parametrize("component", ["item_item", "sequence", "factors"])
def test_the_scores_kept_for_the_last_history_are_a_fresh_models(model: CollaborativeModel, component: str) -> None:
    """A model's estimates are kept for the last history and rows (the blend fit mixes them
    twice): any mix of them is what a fresh Collaborative gives, and an item added to the
    catalog since is scored."""
    index = index_with(GROUPS["a"] + GROUPS["b"])
    kept = Collaborative(model, index)
    history = {"a0": 1.0, "a1": 0.5, "b2": 0.25}
    for rows in (None, np.arange(0, len(index), 2)):
        for share, prior in ((0.0, 0.0), (1.0, np.inf), (0.3, 2.0)):
            got = getattr(kept, component)(history, rows, share, prior)
            fresh = getattr(Collaborative(model, index), component)(history, rows, share, prior)
            for part in range(2):
                np.testing.assert_array_equal(got[part], fresh[part], err_msg=f"{rows is None} {share} {prior}")
    getattr(kept, component)(history)
    index.extend(["new"], near(index, "a0", "a1")[None, :], np.ones(1))
    grown = getattr(kept, component)(history)
    fresh = getattr(Collaborative(model, index), component)(history)
    assert len(grown[0]) == len(index) and grown[1][index.rows["new"]] != 0
    np.testing.assert_array_equal(grown[1], fresh[1])


def test_a_collaborative_that_scored_is_freed_with_its_last_reference(model: CollaborativeModel) -> None:
    """What a Collaborative keeps between calls holds no reference back to it: the blend fit
    drops a rejected trial's models (GBs at a million items) at once, not at the next full
    garbage collection."""
    collaborative = Collaborative(model, index_with(GROUPS["a"] + GROUPS["b"]))
    for name in ("item_item", "sequence", "factors"):
        getattr(collaborative, name)({"a0": 1.0, "b1": 0.5}, np.arange(5), 0.5, 2.0)
        getattr(collaborative, name)({"a0": 1.0}, None, 0.5, 2.0)
    alive = weakref.ref(collaborative)
    gc.disable()
    try:
        del collaborative
        assert alive() is None
    finally:
        gc.enable()


def test_the_evidence_counts_round_trip_and_an_older_model_keeps_the_prior_off(model: CollaborativeModel) -> None:
    read, _ = CollaborativeModel.from_npz(model.to_npz())
    np.testing.assert_array_equal(read.evidence, model.evidence)
    older, _ = CollaborativeModel.from_npz(replace(model, evidence=None).to_npz())
    assert older.evidence is None
    collaborative = Collaborative(older, index_with(GROUPS["a"] + GROUPS["b"]))
    known = collaborative.item_item({"a0": 1.0}, evidence_prior=10.0)
    np.testing.assert_array_equal(known[0], collaborative.item_item({"a0": 1.0})[0])
    assert collaborative.evidence_share(10.0).tolist() == [1.0] * 10
