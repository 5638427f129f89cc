"""recsys.artifacts: the one .npz writer and reader, and the three artifacts written with it."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from recsys.artifacts import ArtifactFormatError, read_npz, write_npz
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.popularity import PopularityCounters

ARRAYS = {"ids": np.array(["a", "ünï", "c"]), "vectors": np.arange(6, dtype=np.float32).reshape(3, 2),
          "when": np.array(12.5)}


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewritten(data: bytes, drop: str | None = None, **replaced: np.ndarray) -> bytes:
    """The same archive with one member dropped or replaced, written as np.savez would."""
    arrays = {name[:-len(".npy")]: np.load(io.BytesIO(raw), allow_pickle=False)
              for name, raw in members(data).items() if name != f"{drop}.npy"}
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays, **replaced})
    return buffer.getvalue()


def test_a_round_trip_gives_the_arrays_and_the_metadata() -> None:
    data = write_npz("thing", 2, ARRAYS, {"model_version": "mini-lm", "updated_at": 3.5, "count": 7})
    artifact = read_npz(data, "thing", 2, fields=("ids", "vectors", "when"))
    assert set(artifact.arrays) == set(ARRAYS)
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(artifact.arrays[name], array)
        assert artifact.arrays[name].dtype == array.dtype
    assert artifact.meta == {"model_version": "mini-lm", "updated_at": 3.5, "count": 7}
    assert list(members(data))[0] == "format.npy"


def test_the_same_content_is_the_same_bytes() -> None:
    first = write_npz("thing", 2, ARRAYS, {"source": "abc"})
    assert write_npz("thing", 2, {name: array.copy() for name, array in ARRAYS.items()}, {"source": "abc"}) == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_an_optional_array_may_be_absent_and_an_undeclared_one_is_refused() -> None:
    data = write_npz("thing", 2, {"ids": ARRAYS["ids"]})
    assert set(read_npz(data, "thing", 2, fields=("ids",), optional=("vectors",)).arrays) == {"ids"}
    with pytest.raises(ArtifactFormatError, match="expected thing/2, found thing/2 without vectors"):
        read_npz(data, "thing", 2, fields=("ids", "vectors"))
    with pytest.raises(ArtifactFormatError, match="with an unknown array ids"):
        read_npz(data, "thing", 2, fields=())


def test_a_missing_format_is_refused() -> None:
    data = rewritten(write_npz("thing", 2, ARRAYS), drop="format")
    with pytest.raises(ArtifactFormatError, match="expected thing/2, found no format member") as refused:
        read_npz(data, "thing", 2, fields=("ids",))
    assert (refused.value.expected, refused.value.found) == ("thing/2", "no format member")
    assert isinstance(refused.value, ValueError)


def test_another_kind_or_version_is_refused() -> None:
    data = write_npz("thing", 2, ARRAYS)
    with pytest.raises(ArtifactFormatError, match="expected other/2, found thing/2"):
        read_npz(data, "other", 2, fields=("ids",))
    with pytest.raises(ArtifactFormatError, match="expected thing/3, found thing/2"):
        read_npz(data, "thing", 3, fields=("ids",))
    with pytest.raises(ArtifactFormatError, match="no .npz archive"):
        read_npz(b"PK\x03\x04 not a zip", "thing", 2, fields=())


def test_a_bare_version_is_read_only_where_the_kind_allows_it() -> None:
    data = rewritten(write_npz("thing", 1, ARRAYS), format=np.array(1))
    with pytest.raises(ArtifactFormatError, match="found format 1 without a kind"):
        read_npz(data, "thing", 1, fields=("ids",))
    assert set(read_npz(data, "thing", 1, fields=("ids", "vectors", "when"), bare_version=True).arrays) == set(ARRAYS)
    with pytest.raises(ArtifactFormatError, match="expected thing/2, found format 1 without a kind"):
        read_npz(data, "thing", 2, fields=("ids",), bare_version=True)


def test_pickle_is_never_needed_nor_accepted() -> None:
    objects = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(ValueError, match="object array would need pickle"):
        write_npz("thing", 2, {"ids": objects})
    with pytest.raises(ValueError, match="metadata is one number or string"):
        write_npz("thing", 2, {}, {"blend": {"a": 1}})  # type: ignore[dict-item]
    pickled = rewritten(write_npz("thing", 2, ARRAYS), ids=objects)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        read_npz(pickled, "thing", 2, fields=("ids",))


def test_a_reserved_or_repeated_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'format' given twice"):
        write_npz("thing", 2, {"format": np.array(1)})
    with pytest.raises(ValueError, match="'ids' given twice"):
        write_npz("thing", 2, {"ids": ARRAYS["ids"]}, {"ids": "x"})


def test_each_artifact_names_its_kind_and_refuses_the_others() -> None:
    index = ItemIndex(2)
    index.extend(["a"], np.array([[1.0, 0.0]], dtype=np.float32), np.ones(1))
    files = {"item_index/4": index.to_npz(model_version="m"), "popularity_counters/1": PopularityCounters().to_npz()}
    for name, data in files.items():
        assert np.load(io.BytesIO(data), allow_pickle=False)["format"].item() == name
    with pytest.raises(ArtifactFormatError, match="expected item_index/4, found popularity_counters/1"):
        ItemIndex.from_npz(files["popularity_counters/1"])
    with pytest.raises(ArtifactFormatError, match="expected collaborative/4, found item_index/4"):
        CollaborativeModel.from_npz(files["item_index/4"])
    with pytest.raises(ArtifactFormatError, match="expected popularity_counters/1, found item_index/4"):
        PopularityCounters.from_npz(files["item_index/4"])


def test_an_item_index_written_before_the_format_member_is_refused() -> None:
    index = ItemIndex(2)
    index.extend(["a"], np.array([[1.0, 0.0]], dtype=np.float32), np.ones(1))
    old = rewritten(index.to_npz(model_version="m"), drop="format")
    with pytest.raises(ArtifactFormatError, match="expected item_index/4, found no format member"):
        ItemIndex.from_npz(old)


def test_popularity_counters_written_before_formats_named_their_kind_still_read() -> None:
    """The shards' counters live in S3 across deploys: the previous code's (format 1, a bare number) read."""
    counters = PopularityCounters(item_ids=["a", "b"], popular=np.array([1.0, 2.0]), recent=np.array([0.5, 0.0]),
                                  reference_time=10.0, watermark="42")
    old = rewritten(counters.to_npz(), format=np.array(1))
    restored = PopularityCounters.from_npz(old)
    assert restored.item_ids == ["a", "b"] and restored.watermark == "42"
    assert restored.to_npz() == counters.to_npz()


def test_a_file_on_disk_is_read_memory_mapped(tmp_path) -> None:
    """A Path is read without loading its arrays: large members are views of the file."""
    from pathlib import Path

    path = Path(tmp_path) / "a.npz"
    big = np.arange(100_000, dtype=np.int32).reshape(1000, 100)
    path.write_bytes(write_npz("thing", 2, {"big": big, "names": np.array(["a", "bb"]), "small": np.ones(3)},
                               {"note": "x", "n": 3}))
    artifact = read_npz(path, "thing", 2, ("big", "names", "small"))
    assert isinstance(artifact.arrays["big"], np.memmap) and not artifact.arrays["big"].flags.writeable
    np.testing.assert_array_equal(artifact.arrays["big"], big)
    assert artifact.arrays["names"].tolist() == ["a", "bb"] and artifact.arrays["small"].tolist() == [1.0] * 3
    assert artifact.meta == {"note": "x", "n": 3}
    with pytest.raises(ArtifactFormatError, match="expected thing/3, found thing/2"):
        read_npz(path, "thing", 3, ("big",))
    path.write_bytes(b"not a zip")
    with pytest.raises(ArtifactFormatError, match="no .npz archive"):
        read_npz(path, "thing", 2, ("big",))


def test_an_item_index_read_from_a_file_serves_from_the_map_until_an_upsert(tmp_path) -> None:
    """A release's item vectors are not copied at load: the codes stay a view of the file (a
    large catalog's cold start and memory); the first upsert copies them, and the file is
    never written."""
    from pathlib import Path

    rng = np.random.default_rng(3)  # codes over the 64 KiB below which a member is read, not mapped
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    written = ItemIndex(32)
    written.extend([f"i{r}" for r in range(3000)], vectors, np.ones(3000))
    path = Path(tmp_path) / "items.npz"
    path.write_bytes(written.to_npz(model_version="m"))
    before = path.read_bytes()
    for change in ("update", "append"):
        index, _ = ItemIndex.from_npz(path)
        assert isinstance(index._codes.base, np.memmap) and not index._codes.flags.writeable
        np.testing.assert_allclose(index.vectors_at(np.arange(3000)), written.vectors_at(np.arange(3000)))
        item_id = "i7" if change == "update" else "new"
        index.upsert(item_id, vectors[0], count=1.0)
        assert index._codes.base is None and index._codes.flags.writeable
        np.testing.assert_allclose(index.vector(item_id), vectors[0], atol=0.01)
        np.testing.assert_allclose(index.vector("i8"), vectors[8], atol=0.01)
        assert len(index) == 3000 + (change == "append")
    assert path.read_bytes() == before
