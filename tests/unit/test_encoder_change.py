"""A release that changes the encoder (issue #13): stored profiles hold vectors of the old
encoder. The API reads them as absent (the lists lean on the item history), and the events
function starts them afresh in the new space; `ops refold-profiles` folds them back from the
raw log (tests/integration/test_ops.py). In-memory stores (tests/fakes.py)."""
from __future__ import annotations

import json

import numpy as np

from recsys.ingest import EventIngestor
from recsys.live import LiveCatalog
from recsys.profile import Profile
from recsys.release import build_manifest
from tests.fakes import HashingEncoder, MemoryItems, MemoryProfiles, MemoryRawEvents, MemoryReleases, memory_recommender
from tests.unit.test_release import release_files

DIM = 16
NOW = 1_714_564_800.0


def catalog(encoder: HashingEncoder) -> LiveCatalog:
    releases = MemoryReleases()
    files = release_files(n_items=12, dim=DIM, encoder_version=encoder.version)
    releases.publish("v1", files, build_manifest("v1", files, created_at=1.0))
    return LiveCatalog(releases, MemoryItems(), encoder.version, DIM, collaborative=False)


def stale_profile() -> Profile:
    """A profile the old, 2 x DIM encoder folded: its vectors cannot meet this catalog's."""
    old = np.ones(2 * DIM, dtype=np.float32) / np.sqrt(2 * DIM)
    return Profile("ana", long_term=old, session=old.copy(), session_started_at=NOW - 60, last_event_at=NOW - 60,
                   history={"i1": 3.0, "i2": 1.0}, consumed={"i1", "i2"}, event_count=2,
                   encoder_version="old-encoder")


def test_the_api_lists_for_a_profile_of_another_encoder_from_its_history() -> None:
    encoder, profiles = HashingEncoder(DIM), MemoryProfiles()
    profiles.save(stale_profile())
    service = memory_recommender(encoder, catalog(encoder), profiles=profiles, clock=lambda: NOW)
    listed = service.recommend("ana", 5, context=None)["items"]
    assert len(listed) == 5 and not {"i1", "i2"} & {i["item_id"] for i in listed}, "consumed items stay filtered"


def test_the_next_event_starts_the_vectors_afresh_in_the_new_space() -> None:
    encoder, profiles = HashingEncoder(DIM), MemoryProfiles()
    profiles.save(stale_profile())
    ingest = EventIngestor(encoder, catalog(encoder), profiles, MemoryRawEvents())
    assert ingest.apply({"r1": json.dumps({"event_id": "e3", "user_id": "ana", "type": "click", "item_id": "i3",
                                           "dwell_seconds": 30, "timestamp": NOW}).encode()}) == {}
    profile = profiles.get("ana")
    assert profile.encoder_version == encoder.version
    assert profile.long_term.shape == (DIM,) and profile.session.shape == (DIM,)
    i3 = ingest.catalog.index().vector("i3")
    assert float(profile.long_term @ i3) > 0.99, "the new event alone: nothing of the old space is mixed in"
    assert set(profile.history) == {"i1", "i2", "i3"} and profile.event_count == 3
