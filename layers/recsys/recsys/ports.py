"""What the domain needs from storage, as Protocols, and the values that cross them.

The services (recsys.service, recsys.ingest, recsys.live, recsys.privacy) receive
objects of these shapes; recsys.wiring builds the AWS adapters (recsys.adapters) from
settings, and the unit tests pass the in-memory ones of tests/fakes.py. Nothing here
imports boto3, pynamodb or an adapter.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from recsys.catalog import Item
    from recsys.events import Event
    from recsys.popularity import PopularityCounters
    from recsys.profile import Profile


class ConcurrentUpdate(Exception):
    """What was read (a profile, a shard's popularity counters) changed before the write."""


class Unstorable(ValueError):
    """The store refuses the value itself (DynamoDB: an item over 400 KB, a number out of its
    range): writing it again cannot succeed."""


@dataclass(frozen=True)
class ChangedItem:
    """An item written after the published snapshot, as a warm function reads it;
    `available` is False for an item deleted or set unavailable (retired)."""
    item_id: str
    vector: np.ndarray | None
    categories: tuple[str, ...]
    updated_at: float
    attributes: dict[str, Any] | None = None
    available: bool = True


@dataclass(frozen=True)
class Impression:
    """A served list: who saw which items (in order), in which variant, from which model."""
    recommendation_id: str
    user_id: str
    variant: str
    model_version: str
    items: list[str]
    created_at: float
    explored: list[str] | None = None

    @property
    def day(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.created_at))


class Profiles(Protocol):
    """User profiles, written with optimistic locking."""

    def get(self, user_id: str) -> Profile | None: ...

    def save(self, profile: Profile) -> None:
        """Write if nobody wrote the profile since it was read (its `version`); raises
        ConcurrentUpdate otherwise."""

    def erase(self, user_id: str, erased_at: float, keep_seconds: float) -> int:
        """Replaces the profile with a tombstone (an empty profile whose `erased_at` is set, so
        events from before it still in flight are dropped), unconditionally, and with a new
        version, so a write of the profile as read before the erase fails and re-reads; the
        tombstone expires after `keep_seconds`. Returns 1 if a profile with data was there."""

    def user_ids(self) -> Iterator[str]:
        """Every profiled user, tombstones left out (a full read of the store: batch jobs only)."""


class Items(Protocol):
    """The catalog's items: what the API stores, and the vectors the catalog function adds."""

    def get(self, item_id: str) -> Item | None:
        """The item as stored (an unavailable one too); None when unknown or deleted."""

    def put(self, item: Item, vector: np.ndarray | None = None, model_version: str | None = None,
            now: float | None = None) -> None: ...

    def put_many(self, items: Iterable[tuple[Item, np.ndarray | None]], model_version: str | None,
                 now: float) -> int:
        """Writes the items of a published snapshot (their vectors live in the snapshot)."""

    def set_vector(self, item_id: str, text_hash: str, vector: np.ndarray, model_version: str) -> bool:
        """Store the vector of the text with this hash; False if the item's text changed since."""

    def delete(self, item_id: str, now: float | None = None) -> bool:
        """Retire the item for good: it is kept as a tombstone (unavailable, so warm functions
        read its retirement among the changed items) until a put brings it back. False for an
        id never stored; deleting a deleted item is True again (idempotent)."""

    def retired(self) -> set[str]:
        """Ids of every item deleted or set unavailable (what a release must leave out)."""

    def changed_since(self, updated_after: float) -> Iterator[ChangedItem]:
        """Items written after a time and not in the published snapshot, oldest first,
        deleted ones included (unavailable)."""

    def all(self) -> Iterator[Item]:
        """Every item of the live catalog, unavailable ones too, deleted ones not (a full read
        of the store: the build job's export)."""


class EventStream(Protocol):
    def put(self, events: list[Event]) -> list[Event]:
        """Puts events on the stream, each user's in order; returns those not taken (throttled)."""


class RawEvents(Protocol):
    """Every applied event, kept as the build job's training data, erasable per user."""

    def put(self, user_id: str, events: list[Event]) -> None: ...

    def keys(self, user_id: str | None = None) -> Iterator[str]: ...

    def events(self, user_id: str | None = None) -> Iterator[Event]: ...

    def erase(self, user_id: str) -> int:
        """Deletes everything of the user; returns how many objects."""


class DeadLetters(Protocol):
    def send(self, record_id: str, payload: bytes, reason: str) -> None:
        """Park a record that can never be applied, with the reason, to be fixed and redriven."""


class Releases(Protocol):
    """Versioned releases and the pointer naming the one to serve."""

    def current(self) -> str | None:
        """The version the pointer names, or None before the first release."""

    def manifest(self, version: str) -> dict[str, Any]: ...

    def read(self, version: str, name: str) -> bytes: ...

    def fetch(self, version: str, name: str, folder: Path) -> Path:
        """The file downloaded into `folder` (streamed to disk, never held in memory): a
        reader memory-maps it and pages in what requests read."""

    def publish(self, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        """Files, then the manifest, then the pointer: a reader never sees a partial release."""

    def point_to(self, version: str) -> None: ...


class PopularityShards(Protocol):
    """Each stream shard's popularity counters, replaced whole, conditionally on the tag read."""

    def load(self, shard_id: str) -> tuple[PopularityCounters, str] | None:
        """The shard's counters and their tag, or None before its first write."""

    def save(self, shard_id: str, counters: PopularityCounters, etag: str | None) -> str:
        """Replace the counters read with `etag` (None: there were none); returns the new tag,
        or raises ConcurrentUpdate."""

    def etags(self) -> dict[str, str]:
        """Key -> tag of every shard's counters."""

    def get(self, key: str) -> tuple[PopularityCounters, str]: ...


class Impressions(Protocol):
    def put(self, impression: Impression) -> None: ...

    def get(self, recommendation_id: str) -> Impression | None: ...

    def ids_of(self, user_id: str) -> list[str]: ...

    def erase(self, user_id: str) -> int: ...


class Metrics(Protocol):
    """Online counters per (variant, day), only ever added to."""

    def add(self, variant: str, day: str, **counts: int) -> None: ...

    def read(self, first_day: str, last_day: str, variant: str | None = None) -> list[dict[str, Any]]: ...


class TextEncoder(Protocol):
    """Text to unit vectors (recsys.encoder.Encoder)."""
    version: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...
