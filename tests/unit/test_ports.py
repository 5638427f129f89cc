"""Contract tests: every store of recsys.ports behaves the same in its AWS adapter (moto
in-process, resources provisioned from template.yaml) and in its in-memory twin of
tests/fakes.py, so a unit test over the fakes says what the deployed code does."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

from local_stack.provision import provision
from local_stack.template import Template
from recsys.adapters.artifacts import PopularityStore, S3Releases
from recsys.adapters.aws import aws_client
from recsys.adapters.events import RawEventLog
from recsys.adapters.items import ItemRepository, item_model
from recsys.adapters.profiles import ProfileRepository, item_size, profile_model
from recsys.adapters.tracking import ImpressionStore, MetricsStore
from recsys.bloom import BloomFilter
from recsys.catalog import Item
from recsys.events import Event
from recsys.popularity import PopularityCounters
from recsys.ports import ConcurrentUpdate, Impression
from recsys.profile import VETO, Profile, apply_events
from recsys.settings import Settings
from tests.fakes import (
    MemoryImpressions,
    MemoryItems,
    MemoryMetrics,
    MemoryPopularityShards,
    MemoryProfiles,
    MemoryRawEvents,
    MemoryReleases,
)

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
NOW = 1_714_564_800.0


@pytest.fixture(scope="module")
def aws_settings() -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": REGION}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        for cached in (aws_client, item_model, profile_model):
            cached.cache_clear()
        with mock_aws():
            template = Template(ROOT / "template.yaml", "recsys-contract", REGION)
            provision(template, {n: boto3.client(n, region_name=REGION)
                                 for n in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "s3")})
            environment = template.functions()["ApiFunction"].environment
            yield Settings.from_env({**environment, "AWS_REGION": REGION})
        for cached in (aws_client, item_model, profile_model):
            cached.cache_clear()


def both(memory, adapter):
    """A parametrised fixture's two stores: the fake, and the adapter built from the settings."""
    return pytest.fixture(params=["memory", "aws"])(
        lambda request, aws_settings: memory() if request.param == "memory" else adapter(aws_settings))


profiles = both(MemoryProfiles, ProfileRepository)
items = both(MemoryItems, ItemRepository)
releases = both(MemoryReleases, S3Releases)
shards = both(MemoryPopularityShards, PopularityStore)
raw_events = both(MemoryRawEvents, RawEventLog)
impressions = both(MemoryImpressions, ImpressionStore)
metrics = both(MemoryMetrics, MetricsStore)


def test_profiles_round_trip_and_refuse_a_stale_write(profiles) -> None:
    user = f"contract-{id(profiles)}"
    assert profiles.get(user) is None
    profile = Profile(user, long_term=np.arange(4, dtype=np.float32), consumed={"a", "b"}, recent_items=["b", "a"],
                      event_count=2, last_event_at=NOW, applied_events=[7, 9])
    profiles.save(profile)
    read = profiles.get(user)
    assert read.consumed == {"a", "b"} and read.recent_items == ["b", "a"] and read.applied_events == [7, 9]
    assert np.array_equal(read.long_term, profile.long_term) and read.version == profile.version
    stale = profiles.get(user)
    read.event_count = 3
    profiles.save(read)
    stale.event_count = 4
    with pytest.raises(ConcurrentUpdate):
        profiles.save(stale)
    assert profiles.get(user).event_count == 3
    assert user in set(profiles.user_ids())


def test_an_erase_leaves_a_tombstone_that_no_write_prepared_before_it_overwrites(profiles) -> None:
    user, newcomer = f"contract-erase-{id(profiles)}", f"contract-new-{id(profiles)}"
    profiles.save(Profile(user, event_count=2, last_event_at=NOW, applied_events=[7, 9]))
    before = profiles.get(user)
    never_saved = Profile(newcomer, event_count=1)  # read as absent before its erase
    assert profiles.erase(user, NOW + 1, 60) == 1 and profiles.erase(newcomer, NOW + 1, 60) == 0
    assert user not in set(profiles.user_ids()) and newcomer not in set(profiles.user_ids())
    tombstone = profiles.get(user)
    assert tombstone.erased_at == NOW + 1 and tombstone.event_count == 0 and tombstone.applied_events == []
    for stale in (before, never_saved):
        stale.event_count += 1
        with pytest.raises(ConcurrentUpdate):
            profiles.save(stale)
    tombstone.event_count = 1
    profiles.save(tombstone)
    assert profiles.get(user).erased_at == NOW + 1, "the profile after the erase remembers it"
    assert profiles.erase(user, NOW + 2, 60) == 1 and profiles.erase(user, NOW + 3, 60) == 0


def test_profiles_keep_the_history_and_the_consumed_filter(profiles) -> None:
    user = f"contract-history-{id(profiles)}"
    consumed_filter = BloomFilter()
    consumed_filter.add("long-gone")
    profile = Profile(user, consumed={"a"}, history={"old": 0.5, "hidden": VETO, "new": 3.0},
                      consumed_filter=consumed_filter)
    profiles.save(profile)
    read = profiles.get(user)
    assert read.history == {"old": 0.5, "hidden": VETO, "new": 3.0} and list(read.history) == ["old", "hidden", "new"]
    assert read.choices() == [("new", 3.0), ("old", 0.5)]
    assert read.has_consumed("long-gone") and read.has_consumed("a") and not read.has_consumed("other")


def test_a_profile_stored_before_the_history_reads_with_none(aws_settings) -> None:
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=aws_settings.profiles_table, Item={
        "user_id": {"S": "legacy"}, "recent_items": {"L": [{"S": "b"}, {"S": "a"}]}, "consumed": {"SS": ["a", "b"]},
        "event_count": {"N": "2"}, "version": {"N": "1"}})
    read = ProfileRepository(aws_settings).get("legacy")
    assert read.history == {} and read.consumed_filter is None and read.recent_items == ["b", "a"]
    assert read.has_consumed("a") and read.choices() == []


def test_a_heavy_users_profile_stays_under_the_item_limit(aws_settings) -> None:
    """100,000 events of one user on 128-character item ids, each a new item: the item stays
    well under DynamoDB's 400 KB, and every consumed item is still left out."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(64, 384)).astype(np.float32)
    kinds = ["view", "click", "purchase", "rating", "dislike"]
    profile = Profile("heavy")
    item = "{:0>128}".format
    for start in range(0, 100_000, 500):
        events = [Event(f"e{n}", "heavy", kinds[n % 5], NOW + n, item(n), value=4.0 if n % 5 == 3 else None,
                        dwell_seconds=30.0 if n % 5 == 1 else None) for n in range(start, start + 500)]
        apply_events(profile, events, lambda e: vectors[int(e.item_id) % 64] if int(e.item_id) % 10 == 0 else None)
    repository = ProfileRepository(aws_settings)
    size = item_size(repository.record(profile).serialize())
    print(f"profile item: {size} bytes")
    assert size < 300_000, size
    repository.save(profile)
    raw = boto3.client("dynamodb", region_name=REGION).get_item(TableName=aws_settings.profiles_table,
                                                                Key={"user_id": {"S": "heavy"}})["Item"]
    assert item_size(raw) < 300_000
    read = repository.get("heavy")
    assert read.event_count == 100_000 and len(read.recent_items) <= 50 and read.history
    assert all(read.has_consumed(item(n)) for n in (0, 1, 50_000, 99_999))


def test_items_changed_since_and_vectors_only_for_the_current_text(items) -> None:
    first = Item("c-1", "A film", categories=["Drama"], attributes={"year": 1999})
    items.put(first, now=NOW + 1)
    items.put(Item("c-2", "Another"), np.ones(4, np.float32), "m", now=NOW + 2)
    assert items.get("c-1") == first and items.get("nope") is None
    changed = list(items.changed_since(NOW))
    assert [c.item_id for c in changed] == ["c-1", "c-2"] and changed[0].vector is None
    assert changed[0].categories == ("Drama",) and changed[0].attributes == {"year": 1999}
    assert np.array_equal(changed[1].vector, np.ones(4))
    assert [c.item_id for c in items.changed_since(NOW + 1.5)] == ["c-2"]
    assert not items.set_vector("c-1", "another text's hash", np.zeros(4, np.float32), "m")
    assert items.set_vector("c-1", first.text_hash, np.full(4, 0.5, np.float32), "m")
    vectors = {c.item_id: c.vector for c in items.changed_since(NOW)}
    assert np.array_equal(vectors["c-1"], np.full(4, 0.5))
    assert items.put_many([(Item("c-3", "Published"), np.ones(4, np.float32))], "m", NOW + 9) == 1
    assert items.get("c-3") is not None and "c-3" not in {c.item_id for c in items.changed_since(0.0)}, \
        "a published item's vector lives in the snapshot, not in the changed items"
    assert sorted(item.item_id for item in items.all()) == ["c-1", "c-2", "c-3"]
    assert next(item for item in items.all() if item.item_id == "c-1") == first


def test_items_retired_by_delete_or_available_false_and_brought_back_by_a_put(items) -> None:
    """A delete leaves a tombstone warm functions read among the changed items (unavailable),
    is idempotent, and is undone by the next put; an unavailable item is still stored."""
    item = Item("d-1", "Gone soon", categories=["Drama"], attributes={"year": 2001})
    items.put(item, np.ones(4, np.float32), "m", now=NOW + 20)
    items.put(Item("d-2", "Sold out", available=False), now=NOW + 21)
    assert items.get("d-2") == Item("d-2", "Sold out", available=False)
    assert items.delete("d-1", now=NOW + 22) and items.delete("d-1", now=NOW + 23)
    assert not items.delete("d-never", now=NOW + 24) and items.get("d-never") is None
    assert items.get("d-1") is None
    changed = {c.item_id: c for c in items.changed_since(NOW + 19)}
    assert changed["d-1"].available is False and changed["d-1"].updated_at == NOW + 23
    assert changed["d-1"].categories == ("Drama",) and changed["d-2"].available is False
    assert {"d-1", "d-2"} <= items.retired() and "c-2" not in items.retired()
    exported = {item.item_id: item for item in items.all()}
    assert "d-1" not in exported and exported["d-2"].available is False, "the export: deleted ones left out"
    items.put(item, now=NOW + 25)
    assert items.get("d-1") == item and "d-1" not in items.retired()
    assert {c.item_id: c for c in items.changed_since(NOW + 24)}["d-1"].available is True


def test_releases_publish_then_point(releases) -> None:
    assert releases.current() is None
    releases.publish("v1", {"a.npz": b"one"}, {"version": "v1"})
    releases.publish("v2", {"a.npz": b"two"}, {"version": "v2"})
    assert releases.current() == "v2" and releases.read("v1", "a.npz") == b"one"
    assert releases.manifest("v2") == {"version": "v2"}
    releases.point_to("v1")
    assert releases.current() == "v1"


def test_popularity_shards_write_conditionally(shards) -> None:
    assert shards.load("shardId-1") is None
    counters = PopularityCounters()
    counters.apply([("1", Event("e-1", "u-1", "purchase", NOW, item_id="i-1"))])
    tag = shards.save("shardId-1", counters, None)
    with pytest.raises(ConcurrentUpdate):
        shards.save("shardId-1", counters, None)
    loaded, loaded_tag = shards.load("shardId-1")
    assert loaded_tag == tag and loaded.item_ids == ["i-1"] and loaded.watermark == "1"
    counters.apply([("2", Event("e-2", "u-2", "purchase", NOW, item_id="i-2"))])
    newer = shards.save("shardId-1", counters, tag)  # (S3's tag is the content's: it changed)
    counters.apply([("3", Event("e-3", "u-3", "purchase", NOW, item_id="i-3"))])
    with pytest.raises(ConcurrentUpdate):
        shards.save("shardId-1", counters, tag)
    assert list(shards.etags().values()) == [newer]
    assert shards.get(next(iter(shards.etags())))[1] == newer


def test_raw_events_by_user_and_erased(raw_events) -> None:
    mine = [Event("e-1", "a", "click", NOW, item_id="i-1"), Event("e-2", "a", "view", NOW + 1, item_id="i-2")]
    raw_events.put("a", mine)
    raw_events.put("ab", [Event("e-3", "ab", "click", NOW, item_id="i-1")])
    raw_events.put("a", [])
    assert sorted(e.event_id for e in raw_events.events("a")) == ["e-1", "e-2"]
    assert len(list(raw_events.keys())) == 2
    assert raw_events.erase("a") == 1 and list(raw_events.events("a")) == []
    assert [e.event_id for e in raw_events.events("ab")] == ["e-3"], "a user's prefix is not another's"


def test_impressions_by_user_and_erased(impressions) -> None:
    shown = Impression("r-1", "u-1", "control", "m", ["i-1", "i-2"], NOW, ["i-2"])
    impressions.put(shown)
    impressions.put(Impression("r-2", "u-2", "control", "m", ["i-3"], NOW))
    assert impressions.get("r-1") == shown and impressions.get("nope") is None
    assert impressions.ids_of("u-1") == ["r-1"]
    assert impressions.erase("u-1") == 1 and impressions.get("r-1") is None and impressions.get("r-2") is not None


def test_metrics_only_add_up(metrics) -> None:
    metrics.add("control", "2024-05-01", impressions=2)
    metrics.add("control", "2024-05-01", impressions=1, clicks=1)
    metrics.add("fresh", "2024-05-02", conversions=1)
    with pytest.raises(ValueError):
        metrics.add("control", "2024-05-01", likes=1)
    assert metrics.read("2024-05-01", "2024-05-31") == [
        {"variant": "control", "day": "2024-05-01", "impressions": 3, "clicks": 1, "conversions": 0},
        {"variant": "fresh", "day": "2024-05-02", "impressions": 0, "clicks": 0, "conversions": 1}]
    assert [r["variant"] for r in metrics.read("2024-05-01", "2024-05-31", "fresh")] == ["fresh"]


def test_raw_events_erase_raises_on_a_key_s3_refused(aws_settings) -> None:
    # moto never reports per-key delete errors, so this wraps the real (moto) client and adds one,
    # as S3 does in a 200 response (e.g. AccessDenied on one key).
    log = RawEventLog(aws_settings)
    log.put("refused", [Event("e-1", "refused", "click", NOW, item_id="i-1")])
    real = log.s3

    class RefusingOne:
        def __getattr__(self, name):
            return getattr(real, name)

        def delete_objects(self, **kwargs):
            response = real.delete_objects(**kwargs)
            key = kwargs["Delete"]["Objects"][0]["Key"]
            return {**response, "Errors": [{"Key": key, "Code": "AccessDenied", "Message": "denied"}]}

    log.s3 = RefusingOne()
    with pytest.raises(RuntimeError, match="AccessDenied"):
        log.erase("refused")
