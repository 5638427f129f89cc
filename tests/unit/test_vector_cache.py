"""model_build.vector_cache and the catalog stage's use of it: a text embedded before by the
same encoder is not embedded again."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model_build import vector_cache
from model_build.vector_cache import VectorCache


def counting_encoder() -> type:
    """A 16-d hashing encoder class (tests.fakes) that records every text it embeds."""
    from tests.fakes import HashingEncoder

    class CountingEncoder(HashingEncoder):
        version, texts = "counting", []

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(16)

        def encode(self, texts):
            CountingEncoder.texts += list(texts)
            return super().encode(texts)

    return CountingEncoder


def test_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    vectors = np.eye(3, 4, dtype=np.float32)
    vector_cache.save(path, "enc-1", ["a", "b", "a"], np.vstack([vectors[:2], vectors[:1]]))
    cache = VectorCache.load(path, "enc-1", 4)
    assert np.array_equal(cache.get("b"), vectors[1]) and cache.get("zzz") is None
    assert VectorCache.load(path, "enc-2", 4).get("a") is None, "another encoder's vectors are not reused"
    assert VectorCache.load(path, "enc-1", 8).get("a") is None, "nor vectors of another dimension"
    path.write_bytes(b"not an npz")
    assert VectorCache.load(path, "enc-1", 4).get("a") is None
    assert VectorCache.load(tmp_path / "missing.npz", "enc-1", 4).get("a") is None


def test_the_catalog_stage_embeds_only_what_the_cache_lacks(tmp_path: Path, monkeypatch) -> None:
    from model_build import catalog
    from recsys.index import ItemIndex

    CountingEncoder = counting_encoder()
    monkeypatch.setattr(catalog, "Encoder", CountingEncoder)
    data, cache = tmp_path / "data", tmp_path / "cache.npz"
    data.mkdir()
    (data / "items.csv").write_text("item_id,title,genres,tags\n1,One,Drama,\n2,Two,Comedy,\n")
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,1\n")
    assert catalog.run(data, tmp_path, tmp_path / "a.npz", cache=cache) == 0
    assert len(CountingEncoder.texts) == 2
    (data / "items.jsonl").write_text('{"item_id": "3", "title": "Three"}\n{"item_id": "2", "title": "Two, edited"}\n')
    CountingEncoder.texts = []
    assert catalog.run(data, tmp_path, tmp_path / "b.npz", cache=cache) == 0
    assert sorted(CountingEncoder.texts) == ["Three", "Two, edited"], "item 1's text was embedded before"
    index, _ = ItemIndex.from_npz((tmp_path / "b.npz").read_bytes())
    from recsys.catalog import Item
    assert np.allclose(index.vector("1"), CountingEncoder().encode([Item("1", "One", categories=["Drama"]).text])[0],
                       atol=0.005)  # int8 codes


def test_the_catalog_stage_takes_vectors_computed_before(tmp_path: Path, monkeypatch) -> None:
    """`--vectors`: the items a catalog .npz holds keep its vectors (not embedded); the rest are
    embedded; vectors of another encoder version or dimension are refused."""
    import pytest

    from model_build import catalog
    from recsys.index import ItemIndex

    CountingEncoder = counting_encoder()
    monkeypatch.setattr(catalog, "Encoder", CountingEncoder)
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text("item_id,title,genres,tags\n1,One,Drama,\n2,Two,Comedy,\n")
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,1\n")
    computed = np.zeros((1, 16), np.float32)
    computed[0, 3] = 1.0
    given = ItemIndex(16)
    given.extend(["2"], computed, np.zeros(1, np.float32))
    (tmp_path / "given.npz").write_bytes(given.to_npz(model_version="counting", source="a GPU box"))
    assert catalog.run(data, tmp_path, tmp_path / "out.npz", cache=None, vectors_from=tmp_path / "given.npz") == 0
    assert [text.split()[0] for text in CountingEncoder.texts] == ["One"], "item 2's vector was given"
    index, _ = ItemIndex.from_npz(tmp_path / "out.npz")
    assert np.allclose(index.vector("2"), computed[0], atol=0.005)
    (tmp_path / "other.npz").write_bytes(given.to_npz(model_version="another-encoder"))
    with pytest.raises(SystemExit, match="another-encoder"):
        catalog.run(data, tmp_path, tmp_path / "out2.npz", cache=None, vectors_from=tmp_path / "other.npz")


def test_the_stage_embeds_texts_by_length_and_returns_them_in_their_order() -> None:
    """`catalog.embed` batches texts of like length together (less padding) and puts each
    vector back in its text's row (a hashing encoder from tests.fakes: unit tests run
    without the built model)."""
    from model_build import catalog

    CountingEncoder = counting_encoder()
    CountingEncoder.texts = []
    encoder = CountingEncoder()
    texts = [" ".join(["word"] * n) + f" {n}" for n in (90, 3, 200, 1, 40, 7) * 30]
    vectors = catalog.embed(encoder, texts)
    assert np.array_equal(vectors, encoder.encode(texts))
    lengths = [len(text) for text in CountingEncoder.texts[:len(texts)]]
    assert lengths == sorted(lengths)
