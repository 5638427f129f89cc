"""Live popularity: time-decayed interaction counters per item, folded from the event stream.

Each item has two decayed sums of its events' weights, sum_i w_i 2^(-(T - t_i) / h):
with a long half-life ("popular": what people want lately) and a short one ("recent",
which makes "trending"). T, the reference time, is the newest event time seen, not
the wall clock, so a replay of old data (MovieLens is 1996-2018) decays as it did then.
Weights are the profile's (`ProfileConfig.weight`, ratings against the prior mean);
negative ones (hide, dislike, a bounce, a low rating) and searches do not count.

A third sum, `impressions`, counts how often each item was shown: every item of an
`impression` event (one per list the API served) adds 1, decayed with the long
half-life. Exploration looks for items shown little so far.

One set of counters per stream shard, with one writer per shard. Two guards make a
redelivered batch change nothing, byte for byte: the shard's last applied sequence
number (records at or below it are skipped: Lambda retries and replays), and the
fingerprints of the last `remembered_events` counted event ids (the same event sent
twice, or redriven from the dead-letter queue, counts once).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.artifacts import read_npz, write_npz
from recsys.events import IMPRESSION, Event
from recsys.profile import DEFAULT_CONFIG, ProfileConfig, event_fingerprint

DAY = 86_400.0


@dataclass(frozen=True)
class PopularityConfig:
    popular_half_life_days: float = 90.0
    recent_half_life_days: float = 1.0
    remembered_events: int = 50_000
    # An item whose popular sum decays below this is dropped (a weight-1 event after ~13 half-lives).
    forget_below: float = 1e-4
    # Trending shrinks an item's rate ratio towards 0 by this much evidence (in event weights),
    # so one click on an unknown item does not outrank a hit that doubled its pace.
    trending_pseudo_weight: float = 3.0

    @property
    def popular_half_life(self) -> float:
        return self.popular_half_life_days * DAY

    @property
    def recent_half_life(self) -> float:
        return self.recent_half_life_days * DAY


DEFAULT_POPULARITY = PopularityConfig()
KIND = "popularity_counters"
FORMAT = 1  # `impressions` was added later: an object without it reads as none shown


def event_weight(event: Event, config: ProfileConfig = DEFAULT_CONFIG) -> float:
    """What one event adds to its item's counters: the profile weight, or 0 when that is not positive."""
    if event.item_id is None or event.type == "search":
        return 0.0
    return max(0.0, config.weight(event))


@dataclass
class PopularityCounters:
    """One shard's counters, relative to `reference_time`; see the module's docstring."""

    item_ids: list[str] = field(default_factory=list)
    popular: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reference_time: float = 0.0
    watermark: str = ""  # the last applied sequence number ("" before the first)
    remembered: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<u8"))  # oldest first
    impressions: np.ndarray = field(default_factory=lambda: np.zeros(0))  # empty: zeros for every item

    def __post_init__(self) -> None:
        if len(self.impressions) == 0:
            self.impressions = np.zeros(len(self.item_ids))
        if not (len(self.item_ids) == len(self.popular) == len(self.recent) == len(self.impressions)):
            raise ValueError("item_ids, popular, recent and impressions must have one entry per item")
        self._rows = {item_id: row for row, item_id in enumerate(self.item_ids)}

    def apply(self, records: Iterable[tuple[str, Event | None]], config: PopularityConfig = DEFAULT_POPULARITY,
              weights: ProfileConfig = DEFAULT_CONFIG) -> int:
        """Fold (sequence number, event) records in, in place; returns how many events counted.

        A record at or below the watermark is skipped; None stands for a record that is
        not a valid event (it only moves the watermark). The watermark moves even when
        nothing counts; the counters change only when something does.
        """
        watermark = _sequence(self.watermark) if self.watermark else -1
        remembered = set(self.remembered.tolist())
        counted: list[tuple[Event, float, int]] = []
        for sequence, event in records:
            number = _sequence(sequence)
            if number <= watermark:
                continue
            watermark = number
            self.watermark = sequence
            if event is None:
                continue
            weight = float(len(event.item_ids or ())) if event.type == IMPRESSION else event_weight(event, weights)
            # Keyed by user too: event ids are unique per user (as profiles dedupe), not globally.
            fingerprint = event_fingerprint(f"{event.user_id}\x00{event.event_id}")
            if weight <= 0.0 or fingerprint in remembered:
                continue
            remembered.add(fingerprint)
            counted.append((event, weight, fingerprint))
        if counted:
            self._count(counted, config)
        return len(counted)

    def _count(self, counted: list[tuple[Event, float, int]], config: PopularityConfig) -> None:
        self.decay_to(max(e.timestamp for e, _, _ in counted), config)
        interactions = [(e, e.item_id, w) for e, w, _ in counted if e.type != IMPRESSION and e.item_id]
        shown = [(item_id, e.timestamp) for e, _, _ in counted if e.type == IMPRESSION for item_id in e.item_ids or ()]
        rows = np.array([self._row(item_id) for _, item_id, _ in interactions], dtype=np.int64)
        shown_rows = np.array([self._row(item_id) for item_id, _ in shown], dtype=np.int64)
        self._grow()
        age = self.reference_time - np.array([e.timestamp for e, _, _ in interactions])
        weight = np.array([w for _, _, w in interactions])
        np.add.at(self.popular, rows, weight * np.exp2(-age / config.popular_half_life))
        np.add.at(self.recent, rows, weight * np.exp2(-age / config.recent_half_life))
        shown_age = self.reference_time - np.array([t for _, t in shown])
        np.add.at(self.impressions, shown_rows, np.exp2(-shown_age / config.popular_half_life))
        self.remembered = np.concatenate([self.remembered, np.array([f for _, _, f in counted], dtype="<u8")]
                                         )[-config.remembered_events:]
        self._forget(config)

    def decay_to(self, reference_time: float, config: PopularityConfig = DEFAULT_POPULARITY) -> None:
        """Move the reference time forward (never back), decaying every sum to it."""
        if reference_time <= self.reference_time:
            return
        elapsed = reference_time - self.reference_time
        self.popular = self.popular * math.exp2(-elapsed / config.popular_half_life)
        self.recent = self.recent * math.exp2(-elapsed / config.recent_half_life)
        self.impressions = self.impressions * math.exp2(-elapsed / config.popular_half_life)
        self.reference_time = reference_time

    def _row(self, item_id: str) -> int:
        row = self._rows.get(item_id)
        if row is None:
            row = self._rows[item_id] = len(self.item_ids)
            self.item_ids.append(item_id)
        return row

    def _grow(self) -> None:
        missing = len(self.item_ids) - len(self.popular)
        if missing:
            self.popular = np.concatenate([self.popular, np.zeros(missing)])
            self.recent = np.concatenate([self.recent, np.zeros(missing)])
            self.impressions = np.concatenate([self.impressions, np.zeros(missing)])

    def _forget(self, config: PopularityConfig) -> None:
        keep = (self.popular >= config.forget_below) | (self.impressions >= config.forget_below)
        if keep.all():
            return
        self.item_ids = [i for i, k in zip(self.item_ids, keep, strict=True) if k]
        self.popular, self.recent, self.impressions = self.popular[keep], self.recent[keep], self.impressions[keep]
        self._rows = {item_id: row for row, item_id in enumerate(self.item_ids)}

    def to_npz(self) -> bytes:
        """The counters as .npz (see recsys.artifacts), the same bytes for the same counters."""
        return write_npz(KIND, FORMAT, {
            "item_ids": _joined(self.item_ids), "popular": self.popular.astype("<f8"),
            "recent": self.recent.astype("<f8"), "reference_time": np.array(self.reference_time, dtype="<f8"),
            "watermark": np.array(self.watermark), "remembered": self.remembered.astype("<u8"),
            "impressions": self.impressions.astype("<f8")})

    @classmethod
    def from_npz(cls, data: bytes) -> PopularityCounters:
        """Counters written by this code, or by the code before formats named their kind (the
        shards' objects in S3 outlive a deploy); raises ArtifactFormatError for anything else."""
        arrays = read_npz(data, KIND, FORMAT, ("item_ids", "popular", "recent", "reference_time", "watermark",
                                               "remembered"), optional=("impressions",), bare_version=True).arrays
        ids = arrays["item_ids"].tobytes().decode()
        return cls(item_ids=ids.split("\n") if ids else [], popular=arrays["popular"].astype(np.float64),
                   recent=arrays["recent"].astype(np.float64), reference_time=float(arrays["reference_time"]),
                   watermark=str(arrays["watermark"]), remembered=arrays["remembered"].astype("<u8"),
                   impressions=arrays["impressions"].astype(np.float64) if "impressions" in arrays
                   else np.zeros(0))


@dataclass(frozen=True)
class LivePopularity:
    """Every shard's counters summed, at the newest shard's reference time."""

    item_ids: list[str]
    popular: np.ndarray
    recent: np.ndarray
    reference_time: float
    impressions: np.ndarray

    @classmethod
    def combine(cls, shards: Sequence[PopularityCounters],
                config: PopularityConfig = DEFAULT_POPULARITY) -> LivePopularity:
        reference_time = max((s.reference_time for s in shards), default=0.0)
        ids: list[str] = []
        rows: dict[str, int] = {}
        for shard in shards:
            for item_id in shard.item_ids:
                if item_id not in rows:
                    rows[item_id] = len(ids)
                    ids.append(item_id)
        popular, recent, impressions = np.zeros(len(ids)), np.zeros(len(ids)), np.zeros(len(ids))
        for shard in shards:
            at = np.array([rows[i] for i in shard.item_ids], dtype=np.int64)
            elapsed = reference_time - shard.reference_time
            np.add.at(popular, at, shard.popular * math.exp2(-elapsed / config.popular_half_life))
            np.add.at(recent, at, shard.recent * math.exp2(-elapsed / config.recent_half_life))
            np.add.at(impressions, at, shard.impressions * math.exp2(-elapsed / config.popular_half_life))
        return cls(ids, popular, recent, reference_time, impressions)


def trending(popular: np.ndarray, recent: np.ndarray, config: PopularityConfig = DEFAULT_POPULARITY) -> np.ndarray:
    """How many times its long-run pace an item is going now, shrunk for thin evidence.

    A steady item's recent sum is recent_half_life / popular_half_life of its popular
    sum (ratio 1); an item whose events all came in the last hours has both sums equal
    (ratio popular_half_life / recent_half_life, 30 by default).
    """
    pace = config.popular_half_life / config.recent_half_life
    return recent * pace / (popular + config.trending_pseudo_weight)


def _sequence(sequence: str) -> int:
    if not sequence.isdigit():
        raise ValueError(f"a Kinesis sequence number is decimal digits, not {sequence!r}")
    return int(sequence)


def _joined(ids: list[str]) -> np.ndarray:
    if any("\n" in i for i in ids):
        raise ValueError("an item id cannot contain a newline")
    return np.frombuffer("\n".join(ids).encode(), dtype=np.uint8)
