"""Stream-side work: fold user events into profiles and popularity counters, and encode
changed catalog items."""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from recsys.catalog import Item
from recsys.events import IMPRESSION, Event, parse_event
from recsys.live import LiveCatalog
from recsys.popularity import DEFAULT_POPULARITY, PopularityConfig, PopularityCounters
from recsys.ports import (
    ConcurrentUpdate,
    DeadLetters,
    Impression,
    Impressions,
    Items,
    Metrics,
    PopularityShards,
    Profiles,
    RawEvents,
    TextEncoder,
)
from recsys.profile import Profile, adopt_encoder, apply_events, event_fingerprint

log = logging.getLogger(__name__)
# Event types attributed to the list they came from (their recommendation_id), by counter.
ATTRIBUTED = {"click": "clicks", "purchase": "conversions"}
# Profile writes that find the profile changed since read, in a row, before the user's records fail.
CONFLICT_RETRIES = 20
T = TypeVar("T")
# Failures caused by what a record holds (or what the store holds for its user): applying it
# again cannot succeed. Everything else (throttled, unreachable, a concurrent writer) may pass.
PERMANENT = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError)


def permanent(error: BaseException) -> bool:
    return isinstance(error, PERMANENT)


def encode_each(encoder: TextEncoder, texts: list[str]) -> list[np.ndarray | Exception]:
    """The texts' vectors, encoded together; if that fails, one by one, a text that fails alone
    given as its error. If every one fails the encoder is broken, not the texts: that error
    is raised (the batch fails, to be retried)."""
    try:
        return list(encoder.encode(texts))
    except Exception as error:
        alone: list[np.ndarray | Exception] = []
        for text in texts:
            try:
                alone.append(encoder.encode([text])[0])
            except Exception as failure:  # noqa: BLE001 -- given back in the text's place
                alone.append(failure)
        if all(isinstance(vector, Exception) for vector in alone):
            raise error
        return alone


def update_profile(profiles: Profiles, user_id: str, change: Callable[[Profile], T | None],
                   current: Profile | None = None) -> T | None:
    """Read, change, write; on a concurrent write re-read and change again.

    `change` returns what it did, or None when it left the profile as it was (then
    nothing is written); returns what the write that succeeded did. `current`, a profile
    the caller has just read, saves the first read.
    """
    for attempt in range(CONFLICT_RETRIES):
        profile = current if attempt == 0 and current is not None else \
            profiles.get(user_id) or Profile(user_id=user_id)
        done = change(profile)
        if done is None:
            return None
        try:
            profiles.save(profile)
            return done
        except ConcurrentUpdate:
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
    raise ConcurrentUpdate(f"profile {user_id}: {CONFLICT_RETRIES} concurrent writes in a row")


class EventIngestor:
    """Applies a batch of events: coalesced per user, each profile written once.

    Kinesis delivers at least once; the effect on profiles is exactly once: an event
    whose id the profile already holds is skipped. A record that cannot be applied
    because of what it holds is dead-lettered with the reason at once, and the shard
    moves on: one that is not a valid event, and one the domain code fails on
    (`permanent`: its search query the encoder cannot encode, a stored profile that cannot
    be read, a write the store refuses). A user's batch that fails so is applied again
    one event at a time, to park only the events that fail. Any other failure (a store
    throttled or unreachable, a concurrent writer, no catalog loaded) fails the records,
    which the mapping retries, then dead-letters. Impression events (the API's record of
    a list it served) are for the popularity function: they change no profile and are
    not logged as the user's events.
    """

    def __init__(self, encoder: TextEncoder, catalog: LiveCatalog, profiles: Profiles, raw_events: RawEvents,
                 dead_letters: DeadLetters | None = None, impressions: Impressions | None = None,
                 metrics: Metrics | None = None) -> None:
        """Without `dead_letters` an invalid record fails (and is retried, then parked by the
        mapping); without `impressions` and `metrics` clicks and purchases are not attributed."""
        self.encoder, self.catalog, self.profiles, self.raw_events = encoder, catalog, profiles, raw_events
        self.dead_letters = dead_letters
        attributing = impressions is not None and metrics is not None
        self.impressions: Impressions | None = impressions if attributing else None
        self.metrics: Metrics | None = metrics if attributing else None

    def apply(self, records: Mapping[str, bytes]) -> dict[str, Exception]:
        """Apply events keyed by record id; returns the records that failed and why (to be
        retried: the ones that can never apply are dead-lettered, when there is a queue)."""
        failures: dict[str, Exception] = {}
        by_user: dict[str, list[tuple[str, Event]]] = defaultdict(list)
        now = time.time()
        for record_id, payload in records.items():
            try:
                event = parse_event(json.loads(payload), now=now)
            except ValueError as error:
                self._park(record_id, payload, error, failures)
                continue
            if event.type != IMPRESSION:
                by_user[event.user_id].append((record_id, event))
        query_vectors, refused_queries = self._encode_queries(by_user)
        index = self.catalog.index()

        def vector_of(event: Event) -> np.ndarray | None:
            if event.type == "search":
                return query_vectors[event.query or ""] if event.query else None
            return index.vector(event.item_id) if event.item_id else None

        applied: list[Event] = []
        for user_id, batch in by_user.items():
            unencoded = {record_id for record_id, event in batch
                         if event.type == "search" and event.query in refused_queries}
            for record_id, event in batch:
                if record_id in unencoded:
                    self._park(record_id, records[record_id], ValueError(
                        f"query not encodable: {event.query!r}: {refused_queries[event.query or '']}"), failures)
            batch = [(record_id, event) for record_id, event in batch if record_id not in unencoded]
            try:
                applied += self._apply_user(user_id, [event for _, event in batch], vector_of)
            except Exception as error:  # noqa: BLE001 -- isolated, parked or retried below
                if not permanent(error):
                    failures.update((record_id, error) for record_id, _ in batch)
                    continue
                applied += self._apply_one_by_one(user_id, batch, records, vector_of, failures)
        if self.metrics is not None:
            self.attribute(applied)
        return failures

    def _encode_queries(self, by_user: Mapping[str, list[tuple[str, Event]]]
                        ) -> tuple[dict[str, np.ndarray], dict[str, Exception]]:
        """The batch's search queries encoded (`encode_each`), and those that failed alone."""
        queries = sorted({e.query for batch in by_user.values() for _, e in batch if e.type == "search" and e.query})
        vectors: dict[str, np.ndarray] = {}
        refused: dict[str, Exception] = {}
        for query, vector in zip(queries, encode_each(self.encoder, queries), strict=True):
            if isinstance(vector, Exception):
                refused[query] = vector
            else:
                vectors[query] = vector
        return vectors, refused

    def _apply_one_by_one(self, user_id: str, batch: list[tuple[str, Event]], records: Mapping[str, bytes],
                          vector_of, failures: dict[str, Exception]) -> list[Event]:
        """A user's events in order, each on its own: the ones that fail for what they hold
        are parked; at a failure that may pass, it and the rest fail, to be retried in order."""
        applied: list[Event] = []
        for position, (record_id, event) in enumerate(batch):
            try:
                applied += self._apply_user(user_id, [event], vector_of)
            except Exception as error:  # noqa: BLE001 -- parked or retried
                if not permanent(error):
                    failures.update((later, error) for later, _ in batch[position:])
                    break
                self._park(record_id, records[record_id], error, failures)
        return applied

    def _park(self, record_id: str, payload: bytes, error: Exception, failures: dict[str, Exception]) -> None:
        """Dead-letter a record that can never apply, with the reason; without a queue it fails."""
        if self.dead_letters is None:
            failures[record_id] = error
            return
        log.warning("event dead-lettered: %s: %s", record_id, error)
        self.dead_letters.send(record_id, payload, f"{type(error).__name__}: {error}")

    def _apply_user(self, user_id: str, events: list[Event], vector_of) -> list[Event]:
        """The raw log first (at least once), then the profile. An erase that lands between
        the two (the write finds the tombstone and drops the events) erases the raw objects
        this wrote, keeping those of events after the erase."""
        profile = self.profiles.get(user_id) or Profile(user_id=user_id)
        applied_before = set(profile.applied_events)
        self.raw_events.put(user_id, [e for e in events if event_fingerprint(e.event_id) not in applied_before
                                      and not profile.erased_before(e)])
        written: list[Profile] = []

        def change(current: Profile) -> list[Event] | None:
            written[:] = [current]
            adopt_encoder(current, self.encoder.version, self.encoder.dim)
            return apply_events(current, events, vector_of) or None

        applied = update_profile(self.profiles, user_id, change, current=profile) or []
        if written and written[0].erased_at != profile.erased_at:
            self.raw_events.erase(user_id)
            self.raw_events.put(user_id, applied)
        return applied

    def attribute(self, applied: list[Event]) -> Counter:
        """Counts the clicks and purchases that name the list they came from, for that list's
        variant and day, one write per (variant, day). Only events newly applied to their
        profile count (a redelivered one does not); the item must be in the list and the
        list must be the user's. A failed counter write is logged, not retried: the counters
        are at most once."""
        counts: Counter = Counter()
        if self.impressions is None or self.metrics is None:
            return counts
        lists: dict[str, Impression | None] = {}
        for event in applied:
            counter = ATTRIBUTED.get(event.type)
            if counter is None or event.recommendation_id is None:
                continue
            if event.recommendation_id not in lists:
                lists[event.recommendation_id] = self.impressions.get(event.recommendation_id)
            shown = lists[event.recommendation_id]
            if shown is not None and shown.user_id == event.user_id and event.item_id in shown.items:
                counts[(shown.variant, shown.day, counter)] += 1
        for (variant, day, counter), n in counts.items():
            try:
                self.metrics.add(variant, day, **{counter: n})
            except Exception:  # the profiles are written; the counters are best effort
                log.exception("metrics counter not written: %s %s %s +%d", variant, day, counter, n)
        return counts


class PopularityCounter:
    """Folds a batch of stream records into its shard's popularity counters, written once.

    The whole batch is one conditional S3 write, so it is applied entirely or not at
    all; a retried or replayed batch is skipped by the shard's sequence watermark. The
    counters stay in memory between batches (one writer per shard); a write that finds
    them changed re-reads and folds the batch again. A record that is not a valid event
    does not count (the events function dead-letters it).
    """

    def __init__(self, store: PopularityShards, config: PopularityConfig = DEFAULT_POPULARITY) -> None:
        self.store = store
        self.config = config
        self._shards: dict[str, tuple[PopularityCounters, str | None]] = {}

    def apply(self, shard_id: str, records: list[tuple[str, bytes]]) -> dict[str, int]:
        """Fold (sequence number, payload) records of one shard; returns what counted."""
        now = time.time()
        parsed = [(sequence, _event_or_none(payload, now)) for sequence, payload in records]
        for attempt in range(2):
            counters, etag = self._read(shard_id, fresh=attempt > 0)
            watermark = counters.watermark
            try:
                counted = counters.apply(parsed, self.config)
                if counted:
                    etag = self.store.save(shard_id, counters, etag)
            except ConcurrentUpdate:
                self._shards.pop(shard_id, None)
                continue
            except BaseException:
                self._shards.pop(shard_id, None)  # memory may be ahead of S3 now
                raise
            self._shards[shard_id] = (counters, etag)
            return {"records": len(records), "counted": counted,
                    "invalid": sum(event is None for _, event in parsed),
                    "already_applied": sum(int(s) <= int(watermark) for s, _ in records) if watermark else 0}
        raise ConcurrentUpdate(f"popularity counters of {shard_id}: another writer holds the shard")

    def _read(self, shard_id: str, fresh: bool) -> tuple[PopularityCounters, str | None]:
        if not fresh and shard_id in self._shards:
            return self._shards[shard_id]
        loaded = self.store.load(shard_id)
        return loaded if loaded is not None else (PopularityCounters(), None)


def _event_or_none(payload: bytes, now: float) -> Event | None:
    try:
        return parse_event(json.loads(payload), now=now)
    except ValueError:
        return None


class ItemEncoder:
    """Encodes items whose text changed and stores their vectors on the item; a retired
    (deleted or unavailable) item is not encoded until it comes back."""

    def __init__(self, encoder: TextEncoder, items: Items) -> None:
        self.encoder, self.items = encoder, items

    def apply(self, images: Mapping[str, dict[str, Any]]) -> dict[str, Exception]:
        """Encode new item images keyed by record id; returns the records that failed and why."""
        failures: dict[str, Exception] = {}
        todo: list[tuple[str, Item]] = []
        for record_id, image in images.items():
            if image.get("available") is False:  # retired: nothing lists it (the mapping filters these too)
                continue
            try:
                item = _item(image)
            except (KeyError, TypeError, ValueError) as error:
                failures[record_id] = ValueError(f"not an item image: {error}")
                continue
            if image.get("vector_text_hash") != item.text_hash:
                todo.append((record_id, item))
        if todo:
            vectors = encode_each(self.encoder, [item.text for _, item in todo])
            for (record_id, item), vector in zip(todo, vectors, strict=True):
                if isinstance(vector, Exception):  # this text alone: the record fails, the rest go on
                    failures[record_id] = vector
                    continue
                try:
                    self.items.set_vector(item.item_id, item.text_hash, vector, self.encoder.version)
                except Exception as error:  # noqa: BLE001 -- retried, then dead-lettered
                    failures[record_id] = error
        return failures


def _item(image: dict[str, Any]) -> Item:
    return Item(item_id=str(image["item_id"]), title=str(image["title"]),
                description=str(image.get("description") or ""),
                categories=[str(c) for c in image.get("categories") or []],
                tags=[str(t) for t in image.get("tags") or []],
                attributes=dict(image.get("attributes") or {}))
