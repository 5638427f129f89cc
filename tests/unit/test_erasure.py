"""Erasing a user leaves a tombstone: events from before the erase still in flight (on the
stream, in the dead-letter queue) are dropped instead of bringing the profile and the raw
log back; events after it start a profile that remembers the erase (issue #14). Stores are
the in-memory twins of tests/fakes.py (their contract with DynamoDB and S3 is
tests/unit/test_ports.py)."""
from __future__ import annotations

import json

from recsys import privacy
from recsys.ingest import EventIngestor
from recsys.live import LiveCatalog
from recsys.release import build_manifest
from tests.fakes import HashingEncoder, MemoryItems, MemoryProfiles, MemoryRawEvents, MemoryReleases
from tests.unit.test_release import release_files

DIM = 16
ERASED_AT = 1_714_564_800.0


def ingestor(raw_events=None) -> EventIngestor:
    encoder, releases = HashingEncoder(DIM), MemoryReleases()
    files = release_files(n_items=12, dim=DIM, encoder_version=encoder.version)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    catalog = LiveCatalog(releases, MemoryItems(), encoder.version, DIM, collaborative=False)
    return EventIngestor(encoder, catalog, MemoryProfiles(), raw_events or MemoryRawEvents())


def records(*events: tuple[str, float]) -> dict[str, bytes]:
    return {str(n): json.dumps({"event_id": event_id, "user_id": "ana", "type": "click", "item_id": "i1",
                                "dwell_seconds": 30, "timestamp": at}).encode()
            for n, (event_id, at) in enumerate(events)}


def erase(ingest: EventIngestor) -> dict[str, int]:
    return privacy.erase_user("ana", ingest.profiles, ingest.raw_events, None, ERASED_AT)


def test_events_from_before_the_erase_are_dropped_and_later_ones_start_a_profile() -> None:
    ingest = ingestor()
    assert ingest.apply(records(("e1", ERASED_AT - 60))) == {}
    assert erase(ingest) == {"profiles": 1, "dedupe_records": 1, "raw_event_objects": 1}
    ingest.apply(records(("e1", ERASED_AT - 60), ("e2", ERASED_AT - 1), ("e3", ERASED_AT)))
    tombstone = ingest.profiles.get("ana")
    assert tombstone.event_count == 0 and tombstone.erased_at == ERASED_AT and not tombstone.recent_items
    assert list(ingest.raw_events.keys("ana")) == [], "in-flight events leave nothing in the raw log"
    ingest.apply(records(("e2", ERASED_AT - 1), ("e4", ERASED_AT + 5)))
    profile = ingest.profiles.get("ana")
    assert profile.event_count == 1 and profile.erased_at == ERASED_AT
    assert [e.event_id for e in ingest.raw_events.events("ana")] == ["e4"]
    assert privacy.user_data("ana", profile, ingest.catalog.index(), 0, 1)["erased_at"] == ERASED_AT


def test_an_erase_landing_while_a_batch_is_applied_wins() -> None:
    """The erase runs after the batch's raw objects are written and before its profile write:
    the write finds the tombstone, drops the events, and the raw objects go too."""

    class ErasedMidway(MemoryRawEvents):
        armed = False

        def put(self, user_id, events) -> None:
            super().put(user_id, events)
            if self.armed:
                self.armed = False
                privacy.erase_user(user_id, ingest.profiles, self, None, ERASED_AT)

    raw = ErasedMidway()
    ingest = ingestor(raw)
    ingest.apply(records(("e1", ERASED_AT - 60)))
    raw.armed = True
    assert ingest.apply(records(("e2", ERASED_AT - 30))) == {}
    assert ingest.profiles.get("ana").event_count == 0 and list(raw.keys("ana")) == []
