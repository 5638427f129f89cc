"""A record that passes validation but cannot be applied is dead-lettered at once, with its
reason, and the rest of the batch is applied: the shard never waits on it (issue #14). A
failure that may pass (a store throttled or down) fails only the records it touched, to be
retried in order. The stores are the in-memory twins of tests/fakes.py; the faults are
injected into them as DynamoDB and the encoder would raise them."""
from __future__ import annotations

import json
import time

import pytest

from recsys.catalog import Item
from recsys.ingest import EventIngestor, ItemEncoder
from recsys.live import LiveCatalog
from recsys.ports import Unstorable
from recsys.release import build_manifest
from tests.fakes import (
    HashingEncoder,
    MemoryDeadLetters,
    MemoryItems,
    MemoryProfiles,
    MemoryRawEvents,
    MemoryReleases,
)
from tests.unit.test_release import release_files

DIM = 16


class RefusingProfiles(MemoryProfiles):
    """Refuses, as DynamoDB would, a write of a profile that holds `poison_item`, or fails
    every write of `down_user` as a throttled or unreachable store does."""

    def __init__(self, poison_item: str | None = None, down_user: str | None = None) -> None:
        super().__init__()
        self.poison_item, self.down_user = poison_item, down_user

    def save(self, profile) -> None:
        if profile.user_id == self.down_user:
            raise ConnectionError("profiles table unreachable")
        if self.poison_item in profile.recent_items:
            raise Unstorable(f"profile {profile.user_id}: Item size has exceeded the maximum allowed size")
        super().save(profile)


class RefusingEncoder(HashingEncoder):
    """Raises on any batch holding a text with `poison` in it (as a tokenizer does on text it
    cannot take), or on every text when `broken`."""

    def __init__(self, poison: str = "\x00poison", broken: bool = False) -> None:
        super().__init__(DIM)
        self.poison, self.broken = poison, broken

    def encode(self, texts):
        if self.broken or any(self.poison in text for text in texts):
            raise ValueError("text not encodable")
        return super().encode(texts)


def ingestor(encoder=None, profiles=None, dead_letters=True):
    encoder = encoder or HashingEncoder(DIM)
    releases = MemoryReleases()
    files = release_files(n_items=12, dim=DIM, encoder_version=encoder.version)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    catalog = LiveCatalog(releases, MemoryItems(), encoder.version, DIM, collaborative=False)
    parked = MemoryDeadLetters() if dead_letters else None
    return EventIngestor(encoder, catalog, profiles or MemoryProfiles(), MemoryRawEvents(), parked), parked


def batch(events: list[dict]) -> dict[str, bytes]:
    now = time.time()
    return {str(1000 + n): json.dumps({"timestamp": now - 100 + n, **e}).encode() for n, e in enumerate(events)}


def click(user: str, n: int, item: str | None = None) -> dict:
    return {"event_id": f"{user}-{n}", "user_id": user, "type": "click", "item_id": item or f"i{n % 5}",
            "dwell_seconds": 30}


def test_one_unstorable_event_is_parked_and_the_users_other_events_and_every_other_user_apply() -> None:
    profiles = RefusingProfiles(poison_item="i9")
    ingest, parked = ingestor(profiles=profiles)
    events = [click("heavy", 0), click("heavy", 1), click("heavy", 2, item="i9"), click("heavy", 3)]
    events += [click(f"u{n}", n) for n in range(20)]
    records = batch(events)
    assert ingest.apply(records) == {}, "nothing is left for the mapping to retry"
    ((record_id, payload, reason),) = parked.messages
    assert record_id == "1002" and payload == records["1002"] and reason.startswith("Unstorable: profile heavy")
    assert profiles.saved["heavy"].event_count == 3 and "i9" not in profiles.saved["heavy"].recent_items
    assert all(profiles.saved[f"u{n}"].event_count == 1 for n in range(20))


def test_a_query_the_encoder_refuses_parks_that_search_alone() -> None:
    ingest, parked = ingestor(encoder=RefusingEncoder())
    events = [{"event_id": "s1", "user_id": "a", "type": "search", "query": "space opera"},
              {"event_id": "s2", "user_id": "a", "type": "search", "query": "bad \x00poison query"},
              {"event_id": "s3", "user_id": "b", "type": "search", "query": "quiet drama"}, click("b", 1)]
    assert ingest.apply(batch(events)) == {}
    ((record_id, _, reason),) = parked.messages
    assert record_id == "1001" and "query not encodable" in reason
    assert ingest.profiles.get("a").event_count == 1 and ingest.profiles.get("b").event_count == 2


def test_an_encoder_that_fails_every_text_fails_the_batch_for_a_retry() -> None:
    ingest, parked = ingestor(encoder=RefusingEncoder(broken=True))
    events = [{"event_id": "s1", "user_id": "a", "type": "search", "query": "space opera"},
              {"event_id": "s2", "user_id": "b", "type": "search", "query": "quiet drama"}]
    with pytest.raises(ValueError, match="not encodable"):
        ingest.apply(batch(events))
    assert not parked.messages


def test_a_store_that_may_recover_fails_only_that_users_records_and_parks_nothing() -> None:
    profiles = RefusingProfiles(down_user="down")
    ingest, parked = ingestor(profiles=profiles)
    records = batch([click("down", 0), click("ok", 0), click("down", 1)])
    failures = ingest.apply(records)
    assert sorted(failures) == ["1000", "1002"] and all(isinstance(e, ConnectionError) for e in failures.values())
    assert not parked.messages and profiles.saved["ok"].event_count == 1


def test_a_failure_that_may_pass_midway_fails_that_event_and_the_users_later_ones_in_order() -> None:
    class Flaky(RefusingProfiles):
        def save(self, profile) -> None:
            if "i8" in profile.recent_items and self.poison_item not in profile.recent_items:
                raise ConnectionError("throttled")
            super().save(profile)

    profiles = Flaky(poison_item="i9")
    ingest, parked = ingestor(profiles=profiles)
    records = batch([click("u", 0), click("u", 1, item="i9"), click("u", 2, item="i8"), click("u", 3)])
    failures = ingest.apply(records)
    assert sorted(failures) == ["1002", "1003"], "the retry resumes at the first event that may pass"
    assert [m[0] for m in parked.messages] == ["1001"] and profiles.saved["u"].event_count == 1


def test_without_a_queue_a_record_that_cannot_apply_fails_for_the_mapping_to_park() -> None:
    ingest, _ = ingestor(profiles=RefusingProfiles(poison_item="i9"), dead_letters=False)
    failures = ingest.apply(batch([click("u", 0), click("u", 1, item="i9")]))
    assert list(failures) == ["1001"] and isinstance(failures["1001"], Unstorable)


def test_an_item_text_the_encoder_refuses_fails_that_record_alone() -> None:
    items = MemoryItems()
    encoder = ItemEncoder(RefusingEncoder(), items)
    good, bad = Item(item_id="g", title="A quiet drama"), Item(item_id="b", title="A \x00poison title")
    for item in (good, bad):
        items.put(item)
    failures = encoder.apply({"1": {**good.to_json(), "text_hash": good.text_hash},
                              "2": {**bad.to_json(), "text_hash": bad.text_hash}})
    assert list(failures) == ["2"] and "not encodable" in str(failures["2"])
    assert set(items.vectors) == {"g"}
