"""A user's profile in the encoder's space, and how each event moves it.

The long-term vector is a time-decayed weighted sum of the vectors of what the user
touched: sum_i w_i v_i 2^(-(T - t_i) / half_life), T the newest event's time. The
session vector is the same sum, with a short half-life, over the current session
only (a session ends after a gap of inactivity). Both sums are kept unnormalised
and both are independent of the order events arrive in, so a late event is folded
in exactly as if it had come on time. Scoring normalises.

A 64-bit fingerprint of each applied event's id is remembered (the last
`remembered_events` of them), so an event delivered twice moves the profile once.

The collaborative history (`history`) holds each touched item's summed event weight, the
same `ProfileConfig.weight` the vectors use (view 0.3 < click, raised by dwell <
add_to_cart < purchase; a rating by its distance from the user's mean); hide and dislike
veto the item (-inf). Only items whose weight is above 0 are positive choices, what the
collaborative models read (recsys.collaborative.history_weights): a bounce, a rating
below the user's tolerance, a hide or a dislike never is. The model_build stage trains on
the same rule and weights (`choice_weights`).

A profile is one DynamoDB item (at most 400 KB), so everything it keeps is bounded in
bytes: the recent items, the history (oldest evicted first) and the consumed ids held
exactly; consumed ids beyond those go to a fixed-size Bloom filter (recsys.bloom) that
remembers them all, so a consumed item never comes back into lists.
"""
from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from recsys.bloom import BloomFilter
from recsys.events import Event

VETO = float("-inf")  # the history weight of a hidden or disliked item: never a positive choice


@dataclass(frozen=True)
class ProfileConfig:
    """Every weight and horizon of the profile update, in one place."""

    view: float = 0.3
    click: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 3.0
    search: float = 1.0
    hide: float = -1.0
    dislike: float = -2.0
    # A click's weight grows with dwell and saturates: click * (1 + dwell_boost * (1 - e^(-dwell/dwell_scale))).
    dwell_boost: float = 1.5
    dwell_scale_seconds: float = 60.0
    # A click left this fast is a bounce: a weak negative.
    bounce_seconds: float = 5.0
    bounce: float = -0.3
    # A rating counts by how far it is above (user's mean - rating_tolerance); the mean is
    # shrunk towards rating_prior_mean while the user has few ratings. Having rated an item
    # is itself a sign of interest, so only ratings clearly below the mean push away.
    rating_scale: float = 0.8
    rating_tolerance: float = 1.0
    rating_prior_mean: float = 3.5
    rating_prior_count: float = 3.0
    long_term_half_life_days: float = 90.0
    session_half_life_seconds: float = 15 * 60.0
    session_gap_seconds: float = 30 * 60.0
    recent_items: int = 50
    # Byte budgets (as DynamoDB sizes them: UTF-8 ids, +1 per list element, +4 per history
    # weight). Worst case with 128-character ids, a 384-d encoder and a full Bloom filter:
    # about 270 KB of the item's 400 KB (tests/unit/test_profile_size.py).
    recent_items_bytes: int = 8_192
    history_bytes: int = 49_152
    consumed_bytes: int = 65_536
    remembered_events: int = 2_000  # 8 bytes each

    def weight(self, event: Event, profile: Profile | None = None) -> float:
        if event.type == "click":
            dwell = event.dwell_seconds
            if dwell is not None and dwell < self.bounce_seconds:
                return self.bounce
            dwell = dwell or 0.0
            return self.click * (1.0 + self.dwell_boost * (1.0 - math.exp(-dwell / self.dwell_scale_seconds)))
        if event.type == "rating":
            mean = profile.rating_mean(self) if profile else self.rating_prior_mean
            return ((event.value or 0.0) - mean + self.rating_tolerance) * self.rating_scale
        return getattr(self, event.type)

    def choice_weight(self, event: Event, profile: Profile | None = None) -> float:
        """What the event adds to its item's collaborative history weight: its `weight`, or
        VETO for hide and dislike (a hidden or disliked item never becomes a positive choice)."""
        return VETO if event.type in ("hide", "dislike") else self.weight(event, profile)


DEFAULT_CONFIG = ProfileConfig()


@dataclass
class Profile:
    user_id: str
    long_term: np.ndarray | None = None
    session: np.ndarray | None = None
    session_started_at: float | None = None
    last_event_at: float | None = None
    recent_items: list[str] = field(default_factory=list)
    consumed: set[str] = field(default_factory=set)
    # item -> summed choice weight (ProfileConfig.choice_weight), least recently touched first
    history: dict[str, float] = field(default_factory=dict)
    consumed_filter: BloomFilter | None = None  # every consumed id, once `consumed` is full
    event_count: int = 0
    rating_sum: float = 0.0
    rating_count: int = 0
    applied_events: list[int] = field(default_factory=list)  # fingerprints, oldest first
    # When the user was last erased: events stamped at or before it are dropped (they were in
    # flight, on the stream or in the dead-letter queue, when the erase ran).
    erased_at: float | None = None
    # The encoder (its model_version) the vectors were folded in; None: folded before profiles
    # kept it. Vectors of another encoder are not comparable with this one's: `in_encoder`.
    encoder_version: str | None = None
    version: int | None = None

    def erased_before(self, event: Event) -> bool:
        """The event predates the user's erasure: it must not bring their data back."""
        return self.erased_at is not None and event.timestamp <= self.erased_at

    def session_active(self, now: float, config: ProfileConfig = DEFAULT_CONFIG) -> bool:
        return (self.session is not None and self.last_event_at is not None
                and now - self.last_event_at <= config.session_gap_seconds)

    def has_consumed(self, item_id: str) -> bool:
        return item_id in self.consumed or (self.consumed_filter is not None and item_id in self.consumed_filter)

    def choices(self) -> list[tuple[str, float]]:
        """The positive choices (history weight above 0), most recent first, with their weights."""
        return [(item_id, self.history[item_id]) for item_id in reversed(self.history) if self.history[item_id] > 0]

    def rating_mean(self, config: ProfileConfig = DEFAULT_CONFIG) -> float:
        return ((self.rating_sum + config.rating_prior_mean * config.rating_prior_count)
                / (self.rating_count + config.rating_prior_count))


def apply_events(profile: Profile, events: Iterable[Event],
                 vector_of: Callable[[Event], np.ndarray | None],
                 config: ProfileConfig = DEFAULT_CONFIG) -> list[Event]:
    """Fold events into the profile, in place; returns the events that were new to it (an
    event it applied before, or one from before the user's erasure, is not).

    `vector_of` gives the unit vector an event is about (the item's, or the search
    query's), or None when it has none (an item not yet encoded).
    """
    seen = set(profile.applied_events)
    sizes = _Sizes(sum(_history_entry(i) for i in profile.history),
                   sum(_utf8_length(i) for i in profile.consumed))
    applied: list[Event] = []
    for event in sorted(events, key=lambda e: (e.timestamp, e.event_id)):
        fingerprint = event_fingerprint(event.event_id)
        if fingerprint in seen or profile.erased_before(event):
            continue
        seen.add(fingerprint)
        _apply(profile, event, vector_of(event), config, sizes)
        applied.append(event)
    profile.applied_events = (profile.applied_events + [event_fingerprint(e.event_id) for e in applied]
                              )[-config.remembered_events:]
    return applied


def in_encoder(profile: Profile | None, encoder_version: str, dim: int) -> Profile | None:
    """The profile as an encoder reads it: vectors folded in another encoder's space (a
    release that changed the encoder) are no taste in this one's and read as absent, while
    everything keyed by item id (history, consumed, recent items, ratings) stays. A profile
    without `encoder_version` (written before profiles kept it) keeps vectors of the
    encoder's dimension. `refold_vectors` (the ops refold-profiles command) brings the
    vectors back, folded from the user's raw events in the new space."""
    if profile is None or not _stale(profile, encoder_version, dim):
        return profile
    return replace(profile, long_term=None, session=None, session_started_at=None, encoder_version=encoder_version)


def adopt_encoder(profile: Profile, encoder_version: str, dim: int) -> None:
    """Before events are folded into a stored profile, in place: stale vectors (`in_encoder`)
    are dropped so the new events start them afresh in this encoder's space, and the profile
    records the encoder."""
    if _stale(profile, encoder_version, dim):
        profile.long_term = profile.session = profile.session_started_at = None
    profile.encoder_version = encoder_version


def refold_vectors(profile: Profile, events: Iterable[Event], vector_of: Callable[[Event], np.ndarray | None],
                   encoder_version: str, config: ProfileConfig = DEFAULT_CONFIG) -> None:
    """The profile's vectors folded afresh, in place, from the user's events (their raw log),
    `vector_of` giving each event's vector in `encoder_version`'s space; nothing else of the
    profile changes (its history, counts and applied events already hold these events)."""
    fresh = Profile(user_id=profile.user_id, erased_at=profile.erased_at)
    apply_events(fresh, events, vector_of, config)
    profile.long_term, profile.session = fresh.long_term, fresh.session
    profile.session_started_at = fresh.session_started_at
    profile.encoder_version = encoder_version


def _stale(profile: Profile, encoder_version: str, dim: int) -> bool:
    if profile.encoder_version is not None:
        return profile.encoder_version != encoder_version
    return any(v is not None and v.shape != (dim,) for v in (profile.long_term, profile.session))


def choice_weights(events: Iterable[Event], config: ProfileConfig = DEFAULT_CONFIG) -> dict[str, float]:
    """The items one user's events make positive choices, each with its summed choice weight
    (above 0), folded as a profile folds them but with no byte bound: what the build job
    trains the collaborative models on (the same weights `history_weights` reads at request
    time, before recency)."""
    profile = Profile(user_id="")
    unbounded = replace(config, history_bytes=sys.maxsize, consumed_bytes=sys.maxsize, remembered_events=0)
    apply_events(profile, events, lambda event: None, unbounded)
    return {item_id: weight for item_id, weight in profile.history.items() if weight > 0}


def positive_items(events: Iterable[Event], config: ProfileConfig = DEFAULT_CONFIG) -> set[str]:
    """The items one user's events make positive choices (`choice_weights`)."""
    return set(choice_weights(events, config))


def event_fingerprint(event_id: str) -> int:
    """A stable 64-bit digest of an event id (what a profile remembers to skip repeats)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass
class _Sizes:
    """Bytes held in the history and in the exact consumed ids, kept up to date while folding."""
    history: int
    consumed: int


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _history_entry(item_id: str) -> int:
    return _utf8_length(item_id) + 5


def _apply(profile: Profile, event: Event, vector: np.ndarray | None, config: ProfileConfig,
           sizes: _Sizes) -> None:
    t, last = event.timestamp, profile.last_event_at
    long_half_life = config.long_term_half_life_days * 86_400.0
    if last is not None and t > last:  # both sums are kept decayed to the newest event's time
        profile.long_term = _decayed(profile.long_term, t - last, long_half_life)
        profile.session = _decayed(profile.session, t - last, config.session_half_life_seconds)
    newest = t if last is None else max(last, t)
    _start_or_extend_session(profile, t, config)
    weight = config.weight(event, profile)  # before this rating joins the user's mean
    if event.item_id is not None:
        _remember(profile, event.item_id, config.choice_weight(event, profile), last is None or t >= last,
                  config, sizes)
    if vector is not None:
        if event.type != "search":
            profile.long_term = _add(profile.long_term, weight * 0.5 ** ((newest - t) / long_half_life), vector)
        if _in_session(profile, t):
            decay = 0.5 ** ((newest - t) / config.session_half_life_seconds)
            profile.session = _add(profile.session, weight * decay, vector)
    if event.type == "rating":
        profile.rating_sum += event.value or 0.0
        profile.rating_count += 1
    profile.last_event_at = newest
    profile.event_count += 1


def _remember(profile: Profile, item_id: str, weight: float, newest: bool, config: ProfileConfig,
              sizes: _Sizes) -> None:
    """The item in the recent items, the history and the consumed ids, each within its bytes."""
    recent = profile.recent_items
    if newest and (not recent or recent[0] != item_id):
        recent = [item_id] + [i for i in recent if i != item_id]
    elif not newest and item_id not in recent:
        recent = recent + [item_id]
    recent, used = recent[: config.recent_items], 0
    for kept, i in enumerate(recent):
        used += _utf8_length(i) + 1
        if used > config.recent_items_bytes:
            recent = recent[:kept]
            break
    profile.recent_items = recent

    history = profile.history
    before = history.get(item_id)
    if before is None:
        sizes.history += _history_entry(item_id)
        if newest:
            history[item_id] = weight
        else:  # a late first event on the item: behind everything touched since
            profile.history = history = {item_id: weight, **history}
    elif newest:
        del history[item_id]
        history[item_id] = before + weight
    else:
        history[item_id] = before + weight
    while sizes.history > config.history_bytes and history:
        oldest = next(iter(history))
        del history[oldest]
        sizes.history -= _history_entry(oldest)

    if profile.consumed_filter is not None:
        profile.consumed_filter.add(item_id)
    elif item_id not in profile.consumed:
        size = _utf8_length(item_id)
        if sizes.consumed + size <= config.consumed_bytes:
            profile.consumed.add(item_id)
            sizes.consumed += size
        else:
            profile.consumed_filter = BloomFilter()
            for i in [*profile.consumed, item_id]:
                profile.consumed_filter.add(i)


def _start_or_extend_session(profile: Profile, t: float, config: ProfileConfig) -> None:
    """A newer event after a long gap starts a new session; a late one inside the gap joins it."""
    last, start = profile.last_event_at, profile.session_started_at
    if last is None or start is None or t - last > config.session_gap_seconds:
        profile.session, profile.session_started_at = None, t
    elif start - config.session_gap_seconds <= t < start:
        profile.session_started_at = t


def _in_session(profile: Profile, t: float) -> bool:
    return profile.session_started_at is not None and t >= profile.session_started_at


def _decayed(vector: np.ndarray | None, seconds: float, half_life: float) -> np.ndarray | None:
    return None if vector is None else (vector * 0.5 ** (seconds / half_life)).astype(np.float32)


def _add(current: np.ndarray | None, weight: float, vector: np.ndarray) -> np.ndarray:
    update = weight * vector.astype(np.float32)
    return update if current is None else (current + update).astype(np.float32)


def unit(vector: np.ndarray | None) -> np.ndarray | None:
    if vector is None:
        return None
    norm = float(np.linalg.norm(vector))
    return None if norm < 1e-9 else (vector / norm).astype(np.float32)
