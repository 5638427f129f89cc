"""In-memory implementations of recsys.ports for unit tests (no AWS, no network).

Each keeps the behaviour the services rely on: profiles' optimistic locking, the items'
"changed since" order and text-hash condition, popularity shards' conditional writes. The
contract tests (tests/unit/test_ports.py) run the same checks against these and the AWS
adapters over moto, so a fake cannot drift from what the adapters do.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recsys.catalog import Item
from recsys.events import Event
from recsys.popularity import PopularityCounters
from recsys.ports import ChangedItem, ConcurrentUpdate, Impression
from recsys.profile import Profile


class MemoryProfiles:
    def __init__(self) -> None:
        self.saved: dict[str, Profile] = {}

    def get(self, user_id: str) -> Profile | None:
        found = self.saved.get(user_id)
        return copy.deepcopy(found) if found is not None else None

    def save(self, profile: Profile) -> None:
        stored = self.saved.get(profile.user_id)
        if (stored.version if stored else None) != profile.version:
            raise ConcurrentUpdate(profile.user_id)
        profile.version = (profile.version or 0) + 1
        self.saved[profile.user_id] = copy.deepcopy(profile)

    def erase(self, user_id: str, erased_at: float, keep_seconds: float) -> int:
        old = self.saved.get(user_id)
        self.saved[user_id] = Profile(user_id=user_id, erased_at=erased_at, version=int(erased_at * 1000))
        return 1 if old is not None and old.event_count else 0

    def user_ids(self) -> Iterator[str]:
        return iter(sorted(user for user, profile in self.saved.items() if profile.event_count))


class MemoryItems:
    def __init__(self, clock=time.time) -> None:
        self.items: dict[str, Item] = {}
        self.vectors: dict[str, tuple[np.ndarray, str, str]] = {}  # item -> (vector, text hash, model version)
        self.updated: dict[str, float] = {}  # only items written after the snapshot
        self.deleted: set[str] = set()  # tombstones: kept in `items`, unavailable
        self.clock = clock

    def get(self, item_id: str) -> Item | None:
        return None if item_id in self.deleted else self.items.get(item_id)

    def put(self, item: Item, vector: np.ndarray | None = None, model_version: str | None = None,
            now: float | None = None) -> None:
        self.items[item.item_id] = item
        self.deleted.discard(item.item_id)
        self.vectors.pop(item.item_id, None)
        if vector is not None:
            self.vectors[item.item_id] = (np.asarray(vector, np.float32), item.text_hash, model_version or "")
        self.updated[item.item_id] = now or self.clock()

    def put_many(self, items: Iterable[tuple[Item, np.ndarray | None]], model_version: str | None,
                 now: float) -> int:
        count = 0
        for item, _ in items:
            self.items[item.item_id] = item
            self.deleted.discard(item.item_id)
            self.updated.pop(item.item_id, None)
            count += 1
        return count

    def set_vector(self, item_id: str, text_hash: str, vector: np.ndarray, model_version: str) -> bool:
        item = self.items.get(item_id)
        if item is None or item.text_hash != text_hash:
            return False
        self.vectors[item_id] = (np.asarray(vector, np.float32), text_hash, model_version)
        self.updated[item_id] = self.clock()
        return True

    def delete(self, item_id: str, now: float | None = None) -> bool:
        if item_id not in self.items:
            return False
        self.deleted.add(item_id)
        self.updated[item_id] = now or self.clock()
        return True

    def retired(self) -> set[str]:
        return {i for i, item in self.items.items() if i in self.deleted or not item.available}

    def all(self) -> Iterator[Item]:
        return iter([self.items[i] for i in sorted(self.items) if i not in self.deleted])

    def changed_since(self, updated_after: float) -> Iterator[ChangedItem]:
        for item_id, at in sorted(self.updated.items(), key=lambda pair: pair[1]):
            if at > updated_after:
                item = self.items[item_id]
                vector = self.vectors.get(item_id, (None,))[0]
                yield ChangedItem(item_id, vector, tuple(item.categories), at, dict(item.attributes),
                                  available=item.available and item_id not in self.deleted)


class MemoryEventStream:
    def __init__(self, refuse: int = 0) -> None:
        self.events: list[Event] = []
        self.refuse = refuse  # the last `refuse` events of each put are throttled

    def put(self, events: list[Event]) -> list[Event]:
        taken = events[:len(events) - self.refuse] if self.refuse else events
        self.events += taken
        return events[len(taken):]


class MemoryRawEvents:
    def __init__(self) -> None:
        self.objects: dict[str, list[Event]] = {}

    def put(self, user_id: str, events: list[Event]) -> None:
        if events:
            digest = hashlib.sha256(repr([e.event_id for e in events]).encode()).hexdigest()[:16]
            self.objects[f"events/user={user_id}/{digest}"] = list(events)

    def keys(self, user_id: str | None = None) -> Iterator[str]:
        prefix = f"events/user={user_id}/" if user_id is not None else "events/"
        return iter([k for k in sorted(self.objects) if k.startswith(prefix)])

    def events(self, user_id: str | None = None) -> Iterator[Event]:
        return itertools.chain.from_iterable(self.objects[k] for k in self.keys(user_id))

    def erase(self, user_id: str) -> int:
        keys = list(self.keys(user_id))
        for key in keys:
            del self.objects[key]
        return len(keys)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, str]] = []

    def send(self, record_id: str, payload: bytes, reason: str) -> None:
        self.messages.append((record_id, payload, reason))


class MemoryReleases:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.pointer: str | None = None

    def current(self) -> str | None:
        return self.pointer

    def manifest(self, version: str) -> dict[str, Any]:
        return copy.deepcopy(self.manifests[version])

    def read(self, version: str, name: str) -> bytes:
        return self.files[version][name]

    def fetch(self, version: str, name: str, folder: Path) -> Path:
        target = folder / version / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(self.files[version][name])
        partial.replace(target)  # a new file: a map of the one it replaces stays valid, as S3Releases' does
        return target

    def publish(self, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        self.files[version] = dict(files)
        self.manifests[version] = copy.deepcopy(manifest)
        self.point_to(version)

    def point_to(self, version: str) -> None:
        self.pointer = version


class MemoryPopularityShards:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}  # key -> (counters as .npz, tag)
        self._tags = itertools.count(1)

    @staticmethod
    def key(shard_id: str) -> str:
        return f"popularity/{shard_id}.npz"

    def load(self, shard_id: str) -> tuple[PopularityCounters, str] | None:
        return self.get(self.key(shard_id)) if self.key(shard_id) in self.objects else None

    def save(self, shard_id: str, counters: PopularityCounters, etag: str | None) -> str:
        current = self.objects.get(self.key(shard_id), (None, None))[1]
        if current != etag:
            raise ConcurrentUpdate(f"popularity counters of {shard_id} changed since read")
        tag = f'"{next(self._tags)}"'
        self.objects[self.key(shard_id)] = (counters.to_npz(), tag)
        return tag

    def etags(self) -> dict[str, str]:
        return {key: tag for key, (_, tag) in self.objects.items()}

    def get(self, key: str) -> tuple[PopularityCounters, str]:
        data, tag = self.objects[key]
        return PopularityCounters.from_npz(data), tag


class MemoryImpressions:
    def __init__(self) -> None:
        self.stored: dict[str, Impression] = {}

    def put(self, impression: Impression) -> None:
        self.stored[impression.recommendation_id] = impression

    def get(self, recommendation_id: str) -> Impression | None:
        return self.stored.get(recommendation_id)

    def ids_of(self, user_id: str) -> list[str]:
        return [i for i, impression in self.stored.items() if impression.user_id == user_id]

    def erase(self, user_id: str) -> int:
        ids = self.ids_of(user_id)
        for i in ids:
            del self.stored[i]
        return len(ids)


class MemoryMetrics:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[str, int]] = defaultdict(
            lambda: {"impressions": 0, "clicks": 0, "conversions": 0})

    def add(self, variant: str, day: str, **counts: int) -> None:
        row = self.counts[(variant, day)]
        unknown = set(counts) - set(row)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}")
        for name, n in counts.items():
            row[name] += n

    def read(self, first_day: str, last_day: str, variant: str | None = None) -> list[dict[str, Any]]:
        return [{"variant": v, "day": d, **row} for (v, d), row in sorted(self.counts.items())
                if first_day <= d <= last_day and (variant is None or v == variant)]


class HashingEncoder:
    """A deterministic stand-in for the int8 encoder where a unit test must not need the
    built model: each word's hash seeds a random vector, a text is the normalised sum of
    its words' (so texts sharing words are close). Not a language model: tests of what the
    encoder means use the real one (tests/integration)."""

    version = "hashing-test-encoder"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[row] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


def memory_recommender(encoder, catalog, items: MemoryItems | None = None, profiles: MemoryProfiles | None = None,
                       stream: MemoryEventStream | None = None, clock=time.time):
    """The API's service (recsys.service.Recommender) over in-memory stores, serving `catalog`."""
    from recsys.service import Recommender
    return Recommender(encoder, catalog, items if items is not None else MemoryItems(),
                       profiles if profiles is not None else MemoryProfiles(), stream or MemoryEventStream(),
                       MemoryRawEvents(), MemoryImpressions(), MemoryMetrics(), clock=clock)
