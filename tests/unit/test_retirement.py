"""Retiring an item (DELETE /items/{id}, or PUT with available=false): out of every list the
ranking makes, its row kept (masked) so what is aligned with the rows stays aligned, its
events still in users' histories, and back when it is PUT again."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model_build.publish import build_release, without
from recsys import ranking, selection
from recsys.catalog import Item, parse_item
from recsys.collaborative import Collaborative
from recsys.events import Event
from recsys.index import ItemIndex
from recsys.ingest import EventIngestor, ItemEncoder
from recsys.live import LiveCatalog
from recsys.popularity import PopularityCounters
from recsys.release import COLLABORATIVE, ITEM_VECTORS, build_manifest
from recsys.service import NotFound, Recommender
from tests.fakes import (
    HashingEncoder,
    MemoryItems,
    MemoryPopularityShards,
    MemoryReleases,
    memory_recommender,
)
from tests.unit.test_release import release_files

DIM = 16
NOW = 1_714_564_800.0


def index_of(n: int = 8) -> ItemIndex:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(4)
    index.extend([f"i{r}" for r in range(n)], vectors, np.arange(1, n + 1, dtype=np.float32),
                 [("Horror",)] * n)
    return index


def listed(index: ItemIndex, rows) -> set[str]:
    return {index.ids[r] for r in rows}


# ---- the index's mask and the ranking ------------------------------------------------

def test_a_retired_item_keeps_its_row_and_leaves_every_selection() -> None:
    index = index_of()
    rows_before = dict(index.rows)
    index.update("i3", available=False)
    assert index.rows == rows_before and len(index) == 8 and index.vector("i3") is not None
    assert not selection.allowed(index, selection.Filters())[index.rows["i3"]]
    assert not selection.allowed(index, selection.parse_filters(categories="Horror"), set())[index.rows["i3"]]
    scores = np.zeros(8, dtype=np.float32)
    scores[index.rows["i3"]] = 10.0  # the best scored of all
    mask = selection.allowed(index, selection.Filters())
    for diversity, explore in ((0.0, 0.0), (0.5, 0.0), (0.0, 1.0)):
        rows, explored = selection.select(index, scores, mask, 8, diversity, explore, np.random.default_rng(0))
        assert "i3" not in listed(index, rows) and len(rows) == 7, (diversity, explore)
    index.update("i3", available=True)
    assert selection.allowed(index, selection.Filters()).all()


def test_the_index_grows_with_new_rows_available() -> None:
    index = ItemIndex(4, capacity=2)
    index.extend(["a", "b"], np.eye(4, dtype=np.float32)[:2], np.ones(2))
    index.update("b", available=False)
    index.upsert("c", np.eye(4, dtype=np.float32)[2])  # grows the arrays
    assert index.available.tolist() == [True, False, True]


def test_similar_trending_and_order_leave_a_retired_item_out() -> None:
    index = index_of()
    index.set_live_counts(index.ids, np.ones(8), np.arange(8, dtype=np.float64))  # i7 trends most
    assert ranking.trending(index, 3)[0][0] == "i7"
    nearest = ranking.similar(index, "i0", 7)[0][0]
    for item_id in ("i7", nearest):
        index.update(item_id, available=False)
    assert "i7" not in {i for i, _ in ranking.trending(index, 8)}
    assert ranking.trending(index, 8, "Horror")[0][0] == "i6"
    assert nearest not in {i for i, _ in ranking.similar(index, "i0", 8)}
    assert ranking.similar(index, nearest, 5) is None, "a retired item has no similar list"
    ranked, unknown, retired = ranking.order(index, None, ["i1", "i7", "nope", "i2"], ranking.Request(4, NOW))
    assert {r.item_id for r in ranked} == {"i1", "i2"} and unknown == ["nope"] and retired == ["i7"]


def test_a_collaborative_model_stays_aligned_with_a_masked_row() -> None:
    """Retiring flips a bit: the collaborative model's arrays keep scoring the same rows."""
    from recsys.collaborative import CollaborativeModel
    files = release_files(n_items=12)
    index, _ = ItemIndex.from_npz(files[ITEM_VECTORS])
    model, _ = CollaborativeModel.from_npz(files[COLLABORATIVE])
    collaborative = Collaborative(model, index)
    before = collaborative.item_item({"i0": 1.0, "i1": 1.0})
    index.update("i2", available=False)
    after = collaborative.item_item({"i0": 1.0, "i1": 1.0})
    assert before is not None and after is not None
    assert np.array_equal(before[1], after[1]), "scores per row unchanged: only the mask moved"


# ---- the service over in-memory stores ----------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    """A published release of 12 items, a recommender and an events ingestor over the same
    item store (each with its own live catalog, as the two functions hold), and the catalog
    function's encoder."""
    encoder, clock, items, releases = HashingEncoder(DIM), Clock(), MemoryItems(), MemoryReleases()
    items.clock = clock
    files = release_files(n_items=12, dim=DIM, encoder_version=encoder.version)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    catalog = LiveCatalog(releases, items, encoder.version, DIM, clock=clock, popularity=MemoryPopularityShards())
    recommender = memory_recommender(encoder, catalog, items, clock=clock)
    ingestor = EventIngestor(encoder, LiveCatalog(releases, items, encoder.version, DIM, clock=clock,
                                                  refresh_seconds=5.0, collaborative=False),
                             recommender.profiles, recommender.raw_events)
    return recommender, ingestor, ItemEncoder(encoder, items), clock


def encode(item_encoder: ItemEncoder, items: MemoryItems, item_id: str) -> None:
    """What the catalog function does with the item's stream record."""
    item = items.items[item_id]
    assert item_encoder.apply({"1": {**item.to_json(), "text_hash": item.text_hash}}) == {}


def every_list(recommender: Recommender, user: str = "u1") -> set[str]:
    """Every id any list route gives: recommendations (with exploration), similar items of
    each item, rank and trending."""
    index = recommender.catalog.index()
    found = {i["item_id"] for i in recommender.recommend(user, 100, None, explore=0.5)["items"]}
    found |= {i["item_id"] for i in recommender.recommend(user, 100, "fresh night", diversity=0.5)["items"]}
    for item_id in index.ids:
        try:
            found |= {i["item_id"] for i in recommender.similar(item_id, 100)["items"]}
        except NotFound:
            pass
    found |= {i["item_id"] for i in recommender.rank(user, list(index.ids), None)["items"]}
    found |= {i["item_id"] for i in recommender.trending(100, None)["items"]}
    return found


def count_popularity(recommender: Recommender, item_ids: list[str]) -> None:
    """What the popularity function writes; the API reads it within 2 s."""
    counters = PopularityCounters()
    counters.apply([(str(n), Event(f"e{n}", "u9", "purchase", NOW, item_id=i)) for n, i in enumerate(item_ids)])
    shards = recommender.catalog.popularity
    assert shards is not None
    shards.save("shardId-1", counters, None)


def test_delete_takes_an_item_out_of_every_route_within_a_refresh_and_a_put_brings_it_back(world) -> None:
    recommender, ingestor, item_encoder, clock = world
    recommender.put_item("fresh", {"title": "Fresh night", "categories": ["Horror"]})
    encode(item_encoder, recommender.items, "fresh")
    count_popularity(recommender, ["fresh", "fresh", "i1"])
    clock.now += 2.1
    assert recommender.trending(3, "Horror")["items"][0]["item_id"] == "fresh"
    assert "fresh" in every_list(recommender)
    assert recommender.similar("fresh", 5)["items"]

    assert recommender.delete_item("fresh") == {"item_id": "fresh", "deleted": True}
    assert recommender.delete_item("fresh") == {"item_id": "fresh", "deleted": True}, "idempotent"
    with pytest.raises(NotFound):
        recommender.delete_item("never-stored")
    with pytest.raises(NotFound):
        recommender.get_item("fresh")
    clock.now += 1.1  # the API's live catalog reads changes at most once a second
    assert "fresh" not in every_list(recommender)
    with pytest.raises(NotFound):
        recommender.similar("fresh", 5)
    answer = recommender.rank("u1", ["fresh", "i1", "nope"], None)
    assert [i["item_id"] for i in answer["items"]] == ["i1"]
    assert answer["unknown_item_ids"] == ["nope"] and answer["unavailable_item_ids"] == ["fresh"]

    # Its events stay in users' history: the events function still folds its vector in.
    clock.now += 5.1
    event = {"event_id": "e-1", "user_id": "u2", "type": "purchase", "item_id": "fresh"}
    assert ingestor.apply({"r-1": json.dumps(event).encode()}) == {}
    profile = recommender.profiles.get("u2")
    assert profile is not None and "fresh" in profile.consumed and profile.long_term is not None
    assert not ingestor.catalog.index().available[ingestor.catalog.index().rows["fresh"]]

    recommender.put_item("fresh", {"title": "Fresh night", "categories": ["Horror"]})
    clock.now += 1.1
    assert "fresh" not in every_list(recommender), "back once encoded, not before"
    encode(item_encoder, recommender.items, "fresh")
    clock.now += 1.1
    assert "fresh" in every_list(recommender, "u1")
    assert recommender.get_item("fresh")["available"] is True


def test_available_false_retires_and_true_brings_back_without_encoding_a_retired_item(world) -> None:
    recommender, _, item_encoder, clock = world
    body = {"title": "Sold out soon", "categories": ["Toys"]}
    recommender.put_item("toy", body)
    encode(item_encoder, recommender.items, "toy")
    clock.now += 1.1
    assert "toy" in every_list(recommender)
    assert recommender.put_item("toy", {**body, "available": False})["available"] is False
    assert recommender.get_item("toy")["available"] is False, "an unavailable item is still stored"
    retired = recommender.items.items["toy"]
    assert item_encoder.apply({"1": {**retired.to_json(), "text_hash": retired.text_hash}}) == {}
    assert "toy" not in recommender.items.vectors, "an unavailable item is not encoded"
    clock.now += 1.1
    assert "toy" not in every_list(recommender)
    recommender.put_item("toy", body)
    encode(item_encoder, recommender.items, "toy")
    clock.now += 1.1
    assert "toy" in every_list(recommender)


def test_a_put_that_drops_a_category_or_attribute_drops_it_from_filtering_at_once(world) -> None:
    """The PUT clears the stored vector until the catalog function re-encodes the item; its
    filters apply at the next refresh all the same (they used to wait for the new vector)."""
    recommender, _, item_encoder, clock = world
    recommender.put_item("film", {"title": "Film", "categories": ["Horror"], "attributes": {"year": 1990}})
    encode(item_encoder, recommender.items, "film")
    clock.now += 1.1

    def found(**filters) -> bool:
        return any(i["item_id"] == "film" for i in recommender.recommend(
            "u1", 100, None, selection.parse_filters(**filters))["items"])

    assert found(categories="Horror") and found(attributes="year:1990")
    recommender.put_item("film", {"title": "Film", "categories": ["Drama"]})
    clock.now += 1.1
    assert not found(categories="Horror") and not found(attributes="year:1990") and found(categories="Drama")


def test_the_item_body_takes_available_and_checks_it() -> None:
    assert parse_item("x", {"title": "X"}).available is True
    assert parse_item("x", {"title": "X", "available": False}) == Item("x", "X", available=False)
    with pytest.raises(ValueError, match="available"):
        parse_item("x", {"title": "X", "available": "no"})
    assert Item("x", "X", available=False).text_hash == Item("x", "X").text_hash, "availability is not text"


# ---- the next release ----------------------------------------------------------------

def test_a_release_leaves_out_the_retired_items(tmp_path) -> None:
    files = release_files(n_items=12)
    (tmp_path / "catalog.npz").write_bytes(files[ITEM_VECTORS])
    (tmp_path / "collaborative.npz").write_bytes(files[COLLABORATIVE])
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (encoder / name).write_bytes(files[name])
    (encoder / "manifest.json").write_bytes(files["encoder.json"])
    _, published, _ = build_release(tmp_path / "catalog.npz", tmp_path / "collaborative.npz", encoder, 1.0,
                                    retired={"i3", "not-in-the-catalog"})
    index, _ = ItemIndex.from_npz(published[ITEM_VECTORS])
    full, _ = ItemIndex.from_npz(files[ITEM_VECTORS])
    assert "i3" not in index.rows and len(index) == 11
    assert np.array_equal(index.vector("i4"), full.vector("i4")) and index.counts[index.rows["i4"]] == \
        full.counts[full.rows["i4"]]
    assert without(full, set()) is full
