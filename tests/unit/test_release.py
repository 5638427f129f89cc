"""Versioned releases: the manifest's checks, and a warm LiveCatalog following the pointer
(S3 and DynamoDB in-process with moto's mock_aws)."""
from __future__ import annotations

import io
import json
import zipfile

import boto3
import numpy as np
import pytest
from moto import mock_aws

from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from model_build.publish import build_release
from recsys.adapters.artifacts import RELEASE_POINTER_KEY
from recsys.adapters.artifacts import S3Releases as Releases
from recsys.adapters.aws import aws_client
from recsys.adapters.items import ItemRepository, item_model
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.live import RETRY_FIRST_SECONDS, LiveCatalog, Unavailable
from recsys.release import COLLABORATIVE, ITEM_VECTORS, ReleaseError, build_manifest, file_entry, open_release
from recsys.scoring import BlendWeights
from recsys.settings import Settings

DIM = 8
ENCODER = "test-encoder-int8-000000000000"
REGION = "us-east-1"


def release_files(n_items: int = 12, blend: BlendWeights | None = None, dim: int = DIM,
                  encoder_version: str = ENCODER) -> dict[str, bytes]:
    rng = np.random.default_rng(n_items)
    ids = [f"i{n}" for n in range(n_items)]
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(dim)
    index.extend(ids, vectors, np.ones(n_items))
    rows = [Interaction(f"u{u}", ids[(u + k) % n_items], 4.0, k) for u in range(30) for k in range(3)]
    model = train(rows, index, TrainingConfig(ease_l2=10.0, neighbours=4, factors=2, als_iterations=2))
    meta = {"blend": blend.to_json()} if blend else {}
    return {ITEM_VECTORS: index.to_npz(model_version=encoder_version, updated_at=100.0),
            COLLABORATIVE: model.to_npz(**meta), "model.onnx": b"onnx bytes", "tokenizer.json": b"{}",
            "encoder.json": json.dumps({"model_version": encoder_version, "dim": dim}).encode()}


def test_a_release_opens_with_its_blend_and_snapshot_time() -> None:
    blend = BlendWeights(item_item=3.0, popularity=0.2)
    files = release_files(blend=blend)
    manifest = build_manifest("v1", files, created_at=1.0, metrics={"ndcg@10": 0.14})
    release = open_release(manifest, files.__getitem__, ENCODER, DIM)
    assert release.version == "v1" and release.weights == blend and release.updated_at == 100.0
    assert len(release.index) == 12 and manifest["dimensions"]["factors"] == 2
    assert manifest["metrics"] == {"ndcg@10": 0.14} and set(manifest["files"]) == set(files)


def test_a_file_that_is_not_the_manifests_is_refused() -> None:
    files = release_files()
    manifest = build_manifest("v1", files, created_at=1.0)
    tampered = dict(files, **{COLLABORATIVE: release_files(n_items=13)[COLLABORATIVE]})
    with pytest.raises(ReleaseError, match=r"release v1: collaborative.npz has sha256 \w+ \(\d+ bytes\), "
                                           r"the manifest says"):
        open_release(manifest, tampered.__getitem__, ENCODER, DIM)


def test_a_release_for_another_encoder_or_dimension_is_refused() -> None:
    files = release_files()
    manifest = build_manifest("v1", files, created_at=1.0)
    with pytest.raises(ReleaseError, match="built with encoder test-encoder.*this function runs other"):
        open_release(manifest, files.__getitem__, "other", DIM)
    with pytest.raises(ReleaseError, match="item vectors are 8-d, the encoder makes 384-d"):
        open_release(manifest, files.__getitem__, ENCODER, 384)
    with pytest.raises(ReleaseError, match="item vectors are 8-d, the encoder makes 16-d"):
        build_manifest("v2", dict(files, **{"encoder.json": b'{"model_version": "x", "dim": 16}'}), 1.0)
    other_space = dict(files, **{COLLABORATIVE: release_files(dim=16)[COLLABORATIVE]})
    with pytest.raises(ReleaseError, match="collaborative model maps 16-d item vectors, the item vectors are 8-d"):
        build_manifest("v4", other_space, 1.0)
    with pytest.raises(ReleaseError, match="missing model.onnx"):
        build_manifest("v3", {k: v for k, v in files.items() if k != "model.onnx"}, 1.0)


def test_item_vectors_written_before_the_format_member_are_refused_by_name() -> None:
    files = release_files()
    manifest = build_manifest("v1", files, created_at=1.0)
    with zipfile.ZipFile(io.BytesIO(files[ITEM_VECTORS])) as archive:  # as the previous build job wrote them
        old = {name[:-4]: np.load(io.BytesIO(archive.read(name)))
               for name in archive.namelist() if name != "format.npy"}
    buffer = io.BytesIO()
    np.savez(buffer, **old)
    files[ITEM_VECTORS] = buffer.getvalue()
    manifest["files"][ITEM_VECTORS] = file_entry(files[ITEM_VECTORS])
    refusal = "release v1: item_vectors.npz: artifact format: expected item_index/4, found no format member; publish"
    with pytest.raises(ReleaseError, match=refusal):
        open_release(manifest, files.__getitem__, ENCODER, DIM)
    with pytest.raises(ReleaseError, match=refusal):
        build_manifest("v1", files, created_at=1.0)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws_client.cache_clear()  # a client cached by another test holds other credentials
    with mock_aws():
        settings = Settings(items_table="items-release-test", artifacts_bucket="artifacts-release-test",
                            region=REGION)
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=settings.artifacts_bucket)
        item_model(settings).create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        yield settings
    aws_client.cache_clear()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("to_files", [False, True], ids=["in-memory", "downloaded-and-mapped"])
def test_a_warm_catalog_follows_the_pointer_and_refuses_a_broken_release(aws: Settings, tmp_path,
                                                                         to_files: bool) -> None:
    """Either way a release is read (its bytes, or its files downloaded to a folder and
    memory-mapped, as the functions do), the same releases are served and refused."""
    releases, clock = Releases(aws), Clock()
    catalog = LiveCatalog(releases, ItemRepository(aws), ENCODER, DIM, clock=clock, release_seconds=30.0,
                          release_dir=tmp_path if to_files else None)

    def downloaded() -> set[str]:
        return {p.name for p in catalog.release_dir.iterdir()} if catalog.release_dir else set()
    assert len(catalog.index()) == 0 and catalog.scorer()[0] is None

    first = release_files(n_items=12)
    releases.publish("v1", first, build_manifest("v1", first, created_at=1.0))
    clock.now += 31
    assert len(catalog.index()) == 12 and catalog.release.version == "v1"
    assert catalog.scorer()[0] is not None

    second = release_files(n_items=20, blend=BlendWeights(item_item=3.0))
    releases.publish("v2", second, build_manifest("v2", second, created_at=2.0))
    clock.now += 10
    assert catalog.release.version == "v1", "the pointer is read at most every release_seconds"
    clock.now += 21
    assert len(catalog.index()) == 20 and catalog.release.version == "v2"
    assert catalog.scorer()[1] == BlendWeights(item_item=3.0) and catalog.release_error is None
    assert downloaded() == ({"v2"} if to_files else set()), "the files of the release served before are removed"

    third = release_files(n_items=25)
    manifest = build_manifest("v3", third, created_at=3.0)
    releases.publish("v3", dict(third, **{ITEM_VECTORS: first[ITEM_VECTORS]}), manifest)
    clock.now += 31
    assert len(catalog.index()) == 20 and catalog.release.version == "v2"
    assert catalog.release_error.startswith("release v3 refused: release v3: item_vectors.npz has sha256")

    releases.point_to("v1")  # a rollback
    clock.now += 31
    assert len(catalog.index()) == 12 and catalog.release.version == "v1" and catalog.release_error is None
    assert downloaded() == ({"v1"} if to_files else set())
    if to_files:
        assert {p.name for p in (catalog.release_dir / "v1").iterdir()} == {ITEM_VECTORS, COLLABORATIVE}


def test_a_poisoned_store_leaves_the_last_good_state_serving_and_is_retried_with_backoff(aws: Settings) -> None:
    """Real faults on moto: a pointer holding corrupt JSON, a pointer naming a version that
    was never published, the items table gone. Each used to make every request raise."""
    releases, clock = Releases(aws), Clock()
    s3 = boto3.client("s3", region_name=REGION)
    first = release_files(n_items=12)
    releases.publish("v1", first, build_manifest("v1", first, created_at=1.0))
    catalog = LiveCatalog(releases, ItemRepository(aws), ENCODER, DIM, clock=clock, release_seconds=30.0)
    assert len(catalog.index()) == 12 and catalog.refresh_error is None

    s3.put_object(Bucket=aws.artifacts_bucket, Key=RELEASE_POINTER_KEY, Body=b"{not json")
    clock.now += 31
    assert len(catalog.index()) == 12 and catalog.release.version == "v1"
    assert "is not" in catalog.refresh_error
    releases.point_to("v9")  # never published
    clock.now += RETRY_FIRST_SECONDS / 2
    assert len(catalog.index()) == 12 and "is not" in catalog.refresh_error, "backing off: not read again yet"
    clock.now += RETRY_FIRST_SECONDS
    assert len(catalog.index()) == 12 and "NoSuchKey" in catalog.refresh_error
    clock.now += 1.5 * RETRY_FIRST_SECONDS  # the second failure in a row waits twice as long
    catalog.index()
    assert catalog._failures == 2

    releases.point_to("v1")
    clock.now += 31
    assert len(catalog.index()) == 12 and catalog.refresh_error is None

    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=aws.items_table)
    clock.now += 31
    assert len(catalog.index()) == 12 and "ResourceNotFound" in catalog.refresh_error

    fresh = LiveCatalog(releases, ItemRepository(aws), ENCODER, DIM, clock=clock)
    assert len(fresh.index()) == 12 and fresh.waiting_for() == ["items"], "the release serves; health says loading"
    s3.put_object(Bucket=aws.artifacts_bucket, Key=RELEASE_POINTER_KEY, Body=b"{not json")
    with pytest.raises(Unavailable, match="could not be loaded yet"):
        LiveCatalog(releases, ItemRepository(aws), ENCODER, DIM, clock=clock).index()  # nothing to fall back on: 503


def test_live_impressions_reach_the_index_and_only_interactions_replace_the_counts(aws: Settings) -> None:
    from recsys.adapters.artifacts import PopularityStore
    from recsys.events import Event
    from recsys.popularity import PopularityCounters

    releases, clock, store = Releases(aws), Clock(), PopularityStore(aws)
    files = release_files(n_items=12)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    catalog = LiveCatalog(releases, ItemRepository(aws), ENCODER, DIM, clock=clock, popularity=store,
                          popularity_seconds=2.0)
    index = catalog.index()
    assert index.counts.tolist() == [1.0] * 12 and index.impressions.tolist() == [0.0] * 12

    counters = PopularityCounters()
    counters.apply([("1", Event("r1", "u1", "impression", 1_000.0, item_ids=("i0", "i1"))),
                    ("2", Event("r2", "u2", "impression", 1_000.0, item_ids=("i1",)))])
    etag = store.save("shardId-0", counters, None)
    clock.now += 3
    index = catalog.index()
    assert index.impressions[:3].tolist() == [1.0, 2.0, 0.0]
    assert index.counts.tolist() == [1.0] * 12, "lists served before any event keep the snapshot's counts"

    counters.apply([("3", Event("e3", "u1", "purchase", 1_000.0, item_id="i5"))])
    store.save("shardId-0", counters, etag)
    clock.now += 3
    index = catalog.index()
    assert index.counts[5] > 0 and index.counts.sum() == index.counts[5], "the live counts replace the snapshot's"
    assert index.impressions[:3].tolist() == [1.0, 2.0, 0.0]


def test_a_collaborative_model_fitted_on_other_item_vectors_is_not_published(tmp_path) -> None:
    files = release_files()
    index, _ = ItemIndex.from_npz(files[ITEM_VECTORS])
    model, _ = CollaborativeModel.from_npz(files[COLLABORATIVE])
    (tmp_path / "catalog.npz").write_bytes(index.to_npz(model_version=ENCODER, source="vectors-b"))
    (tmp_path / "collaborative.npz").write_bytes(model.to_npz(item_vectors="vectors-a"))
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (encoder / name).write_bytes(files[name])
    (encoder / "manifest.json").write_bytes(files["encoder.json"])
    with pytest.raises(ReleaseError, match="fitted on item vectors vectors-a, .* holds vectors-b"):
        build_release(tmp_path / "catalog.npz", tmp_path / "collaborative.npz", encoder, 1.0)
    (tmp_path / "collaborative.npz").write_bytes(model.to_npz(item_vectors="vectors-b"))
    version, _, manifest = build_release(tmp_path / "catalog.npz", tmp_path / "collaborative.npz", encoder, 1.0)
    assert manifest["version"] == version


def test_an_item_re_encoded_after_the_release_borrows_from_its_new_neighbours(aws: Settings) -> None:
    """A new item written with i0's vector, then re-encoded like i7 (its text was edited): the
    live catalog re-derives its neighbour prior and its collaborative transfer, so it scores
    as a freshly aligned model scores it."""
    from recsys.catalog import Item
    from recsys.collaborative import Collaborative

    releases, clock, items = Releases(aws), Clock(), ItemRepository(aws)
    files = release_files(n_items=12)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    catalog = LiveCatalog(releases, items, ENCODER, DIM, clock=clock)
    index = catalog.index()
    first, second = index.vector("i0").copy(), index.vector("i7").copy()
    items.put(Item("fresh", "Fresh"), first, ENCODER, now=clock.now + 1)
    clock.now += 2
    collaborative, _ = catalog.scorer()
    history = {"i0": 1.0, "i1": 1.0}
    before = collaborative.item_item(history)[1][index.rows["fresh"]]
    items.put(Item("fresh", "Fresh, edited"), second, ENCODER, now=clock.now + 1)
    clock.now += 2
    index = catalog.index()
    assert np.allclose(index.vector("fresh"), second) and index.has_prior("fresh")
    after = catalog.scorer()[0].item_item(history)[1][index.rows["fresh"]]
    fresh = Collaborative(catalog.release.collaborative, index).item_item(history)[1][index.rows["fresh"]]
    assert after == pytest.approx(fresh) and after != pytest.approx(before)


def test_health_is_loading_until_the_release_items_and_counters_are_read() -> None:
    """What "loaded" means for a function: the pointer read (a release held, or none
    published yet), the items since that release read, the popularity counters listed."""
    from tests.fakes import (
        HashingEncoder,
        MemoryItems,
        MemoryPopularityShards,
        MemoryReleases,
        memory_recommender,
    )

    releases, clock, encoder = MemoryReleases(), Clock(), HashingEncoder(DIM)
    catalog = LiveCatalog(releases, MemoryItems(), encoder.version, DIM, clock=clock,
                          popularity=MemoryPopularityShards(), release_seconds=30.0)
    assert catalog.waiting_for() == ["release", "items", "popularity"]
    service = memory_recommender(encoder, catalog)
    health = service.health()
    assert health["status"] == "no_release" and health["items"] == 0 and catalog.waiting_for() == []

    files = release_files(n_items=12, encoder_version=encoder.version)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    clock.now += 1.0
    health = service.health()
    assert health["status"] == "ok" and health["items"] == 12 and health["release"] == "v1", \
        "a function holding no release reads the pointer every refresh, not every 30 s"
