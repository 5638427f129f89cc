"""One ranking path: what the API serves is what the offline evaluation and the blend fit
measure, for the same inputs (the recommender over in-memory stores: tests/fakes.py)."""
from __future__ import annotations

import numpy as np
import pytest

from model_build import blend
from model_build.collaborative import TrainingConfig, train
from model_build.data import Interaction
from recsys import ranking
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.live import LiveCatalog
from recsys.release import COLLABORATIVE, ITEM_VECTORS, build_manifest
from recsys.scoring import BlendWeights
from recsys.selection import parse_filters
from recsys.service import Recommender
from tests.fakes import (
    HashingEncoder,
    MemoryItems,
    MemoryProfiles,
    MemoryReleases,
    memory_recommender,
)

ITEMS, USERS, DIM = 60, 40, 16
WEIGHTS = BlendWeights(item_item=1.0, sequence=2.0, factors=0.5, long_term=0.25, session=0.35, popularity=0.1,
                       cold_transfer=2.0, new_item_popularity=0.1)


@pytest.fixture(scope="module")
def world():
    """A published release (item vectors, a collaborative model trained on the interactions,
    the blend weights), the recommender serving it, and the same artifacts read offline."""
    encoder = HashingEncoder(DIM)
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(ITEMS)]
    vectors = encoder.encode([f"item {n % 7} genre {n % 5} word{n}" for n in range(ITEMS)])
    interactions = [Interaction(f"u{u}", ids[int(i)], float(rng.integers(1, 6)), 1_000 + 10 * t)
                    for u in range(USERS) for t, i in enumerate(rng.choice(ITEMS - 10, size=8, replace=False))]
    index = ItemIndex(DIM)
    index.extend(ids, vectors, np.array([sum(r.item_id == i for r in interactions) for i in ids], dtype=np.float32))
    model = train(interactions, index, TrainingConfig(ease_l2=10.0, neighbours=8, factors=4, als_iterations=3))
    files = {ITEM_VECTORS: index.to_npz(model_version=encoder.version, updated_at=0.0),
             COLLABORATIVE: model.to_npz(blend=WEIGHTS.to_json()), "model.onnx": b"-", "tokenizer.json": b"{}",
             "encoder.json": b'{"model_version": "%s", "dim": %d}' % (encoder.version.encode(), DIM)}
    releases = MemoryReleases()
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    offline_index, _ = ItemIndex.from_npz(files[ITEM_VECTORS])
    profiles = MemoryProfiles()
    folded = blend.profiles_from(interactions, offline_index)
    for profile in folded.values():
        profiles.save(profile)
    items = MemoryItems()
    recommender = memory_recommender(encoder, LiveCatalog(releases, items, encoder.version, DIM), items, profiles)
    return recommender, offline_index, Collaborative(model, offline_index), folded


def served(recommender: Recommender, user: str, at: float, **request) -> list[str]:
    recommender.clock = lambda: at
    return [item["item_id"] for item in recommender.recommend(user, **request)["items"]]


def test_the_served_list_is_the_offline_list(world) -> None:
    recommender, index, collaborative, profiles = world
    assert recommender.catalog.scorer()[1] == WEIGHTS, "the release's blend weights are served"
    for user, profile in profiles.items():
        offline = blend.rank(index, profile, WEIGHTS, collaborative)
        assert len(offline) == blend.LIST_LENGTH
        assert served(recommender, user, blend._now(profile), k=blend.LIST_LENGTH, context=None) == offline, user


def test_the_fit_ranks_from_cached_components_as_the_route_does(world) -> None:
    """The blend fit scores every component once and re-weights; under any weighting (each
    component alone too) its lists are the route's."""
    _, index, collaborative, profiles = world
    for weights in (WEIGHTS, *(BlendWeights(**{**blend._SILENT, **only}) for only in blend.ALONE.values())):
        for profile in list(profiles.values())[:10]:
            request = ranking.Request(20, now=blend._now(profile))
            cached = ranking.score(index, profile, None, request.now, weights, collaborative, every=True).components
            fit = ranking.rank(index, profile, request, weights, collaborative, reasons=False, components=cached)
            route = ranking.rank(index, profile, request, weights, collaborative, reasons=False)
            assert [r.item_id for r in fit] == [r.item_id for r in route]


def test_filters_diversity_and_exploration_are_the_ranking_functions(world) -> None:
    """With filters, context, diversity and exploration the route returns exactly what
    recsys.ranking.rank gives for the same request and random draw, reasons included."""
    recommender, index, collaborative, profiles = world
    user, profile = "u3", profiles["u3"]
    recommender.clock = lambda: 2_000.0
    answer = recommender.recommend(user, 10, "genre 2 word9", parse_filters(exclude="i1,i2"), 0.3, 0.2)
    seed = int(answer["recommendation_id"].replace("-", ""), 16)
    request = ranking.Request(10, 2_000.0, recommender.encoder.encode(["genre 2 word9"])[0], "genre 2 word9",
                              parse_filters(exclude="i1,i2"), 0.3, 0.2)
    expected = ranking.rank(index, profile, request, WEIGHTS, collaborative, np.random.default_rng(seed))
    assert answer["items"] == [item.to_json(n) for n, item in enumerate(expected)]
    assert any(item["explored"] for item in answer["items"]) and not {"i1", "i2"} & {
        item["item_id"] for item in answer["items"]}
    assert all(item["reasons"] for item in answer["items"] if not item["explored"])
