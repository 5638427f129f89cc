"""recsys.index.ItemIndex: upsert, growth, and the .npz artifact."""
from __future__ import annotations

import io

import numpy as np
import pytest

from recsys.index import ItemIndex

DIM = 8


def unit_vectors(n: int, seed: int = 3) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_upsert_new_and_existing() -> None:
    index = ItemIndex(DIM)
    a, b = unit_vectors(2)
    index.upsert("a", a, count=4)
    assert len(index) == 1 and index.ids == ["a"]
    np.testing.assert_allclose(index.vector("a"), a, atol=0.004)  # int8 codes: within half a step
    index.upsert("a", b)
    assert len(index) == 1
    np.testing.assert_allclose(index.vector("a"), b, atol=0.004)
    assert index.counts.tolist() == [4.0]
    index.upsert("a", b, count=9)
    assert index.counts.tolist() == [9.0]
    assert index.vector("missing") is None


def test_growth_past_initial_capacity_keeps_every_vector() -> None:
    vectors = unit_vectors(11)
    index = ItemIndex(DIM, capacity=2)
    for n, vector in enumerate(vectors):
        index.upsert(f"i{n}", vector, count=n)
    assert len(index) == 11 and index.vectors.shape == (11, DIM)
    np.testing.assert_allclose(index.vectors, vectors, atol=0.004)
    assert index.counts.tolist() == list(range(11))
    assert all(index.rows[f"i{n}"] == n for n in range(11))


def test_an_empty_initial_capacity_still_grows() -> None:
    index = ItemIndex(DIM, capacity=0)
    index.upsert("a", unit_vectors(1)[0])
    assert len(index) == 1


@pytest.mark.parametrize("shape", [(DIM + 1,), (DIM - 1,), (1, DIM), ()])
def test_a_vector_of_the_wrong_shape_raises(shape: tuple[int, ...]) -> None:
    index = ItemIndex(DIM)
    with pytest.raises(ValueError, match="shape"):
        index.upsert("a", np.zeros(shape, dtype=np.float32))
    assert len(index) == 0


def test_npz_round_trip_without_pickle() -> None:
    index = ItemIndex(DIM, capacity=4)
    ids = ["i0", "movie:42", "ünï", "x" * 40, "i4"]
    index.extend(ids, unit_vectors(5), np.array([0, 1, 2.5, 30, 4]),
                 attributes=[{"year": 1995}, {}, {"lang": "en", "new": True}, {}, {"price": 9.5}])
    data = index.to_npz(model="mini-lm", version=3.0)

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert set(npz.files) == {"format", "ids", "codes", "scales", "counts", "categories", "attributes", "model",
                                  "version"}

    loaded, meta = ItemIndex.from_npz(data)
    assert loaded.ids == ids and loaded.dim == DIM
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    np.testing.assert_array_equal(loaded.counts, index.counts)
    assert meta == {"model": "mini-lm", "version": 3.0}
    assert loaded.attributes == index.attributes and loaded.attributes[2] == {"lang": "en", "new": True}
    loaded.upsert("new", unit_vectors(1, seed=9)[0])
    assert len(loaded) == 6


def test_npz_round_trip_of_an_empty_index() -> None:
    loaded, meta = ItemIndex.from_npz(ItemIndex(DIM).to_npz())
    assert len(loaded) == 0 and loaded.dim == DIM and meta == {}


def test_categories_and_the_neighbour_prior() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(8)
    index.extend([f"i{n}" for n in range(30)], vectors, np.arange(30, dtype=np.float32),
                 [("Horror",) if n % 2 else ("Comedy", "Drama") for n in range(30)])
    restored, _ = ItemIndex.from_npz(index.to_npz())
    assert restored.categories[restored.rows["i1"]] == ("Horror",)
    assert restored.categories[restored.rows["i2"]] == ("Comedy", "Drama")
    index.upsert("new", vectors[29] * 0.99 + vectors[28] * 0.01, count=0.0)
    index.set_prior("new")
    assert index.counts[index.rows["new"]] == 0
    assert index.popularity_counts[index.rows["new"]] > 15, "a new item near popular ones starts popular"


def test_a_prior_is_known_and_follows_a_changed_vector() -> None:
    """Rows 0-9 are counted 100, rows 10-19 once; an item near the first group, then moved near
    the second (its text changed), has a prior set again from its new neighbours."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(2, 8)).astype(np.float32)
    vectors = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(8)
    index.extend([f"i{n}" for n in range(20)], vectors, np.array([100.0] * 10 + [1.0] * 10, dtype=np.float32))
    assert not index.has_prior("i0") and not index.has_prior("missing")
    index.upsert("new", vectors[0], count=0.0)
    index.set_prior("new")
    assert index.has_prior("new") and index.popularity_counts[index.rows["new"]] > 50
    index.upsert("new", vectors[15])
    assert index.popularity_counts[index.rows["new"]] < 20


def test_an_index_written_with_float_vectors_loads_quantized() -> None:
    """Releases written before int8 vectors (format 3: float32 "vectors") still load."""
    from recsys.artifacts import write_npz

    vectors = unit_vectors(3)
    data = write_npz("item_index", 3, {"ids": np.array(["a", "b", "c"]), "vectors": vectors,
                                       "counts": np.array([1.0, 2.0, 3.0]), "categories": np.array(["x", "", "x|y"]),
                                       "attributes": np.array(["{}", '{"p": 1}', "{}"])})
    index, _ = ItemIndex.from_npz(data)
    np.testing.assert_allclose(index.vectors, vectors, atol=0.004)
    assert index.categories == [("x",), (), ("x", "y")] and index.attributes[1] == {"p": 1}
    assert index.to_npz() != data and ItemIndex.from_npz(index.to_npz())[0].ids == ["a", "b", "c"]
