"""A user's profile in the encoder's space, and how each event moves it.

The long-term vector is a time-decayed weighted sum of the vectors of what the user
touched: sum_i w_i v_i 2^(-(T - t_i) / half_life), T the newest event's time. The
session vector is the same sum, with a short half-life, over the current session
only (a session ends after a gap of inactivity). Both sums are kept unnormalised
and both are independent of the order events arrive in, so a late event is folded
in exactly as if it had come on time. Scoring normalises.

A 64-bit fingerprint of each applied event's id is remembered (the last
`remembered_events` of them), so an event delivered twice moves the profile once.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from recsys.events import Event


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
    consumed_items: int = 10_000
    remembered_events: int = 2_000

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
    event_count: int = 0
    rating_sum: float = 0.0
    rating_count: int = 0
    applied_events: list[int] = field(default_factory=list)  # fingerprints, oldest first
    version: int | None = None

    def session_active(self, now: float, config: ProfileConfig = DEFAULT_CONFIG) -> bool:
        return (self.session is not None and self.last_event_at is not None
                and now - self.last_event_at <= config.session_gap_seconds)

    def rating_mean(self, config: ProfileConfig = DEFAULT_CONFIG) -> float:
        return ((self.rating_sum + config.rating_prior_mean * config.rating_prior_count)
                / (self.rating_count + config.rating_prior_count))


def apply_events(profile: Profile, events: Iterable[Event],
                 vector_of: Callable[[Event], np.ndarray | None],
                 config: ProfileConfig = DEFAULT_CONFIG) -> list[Event]:
    """Fold events into the profile, in place; returns the events that were new to it.

    `vector_of` gives the unit vector an event is about (the item's, or the search
    query's), or None when it has none (an item not yet encoded).
    """
    seen = set(profile.applied_events)
    applied: list[Event] = []
    for event in sorted(events, key=lambda e: (e.timestamp, e.event_id)):
        fingerprint = event_fingerprint(event.event_id)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        _apply(profile, event, vector_of(event), config)
        applied.append(event)
    profile.applied_events = (profile.applied_events + [event_fingerprint(e.event_id) for e in applied]
                              )[-config.remembered_events:]
    return applied


def event_fingerprint(event_id: str) -> int:
    """A stable 64-bit digest of an event id (what a profile remembers to skip repeats)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def _apply(profile: Profile, event: Event, vector: np.ndarray | None, config: ProfileConfig) -> None:
    t, last = event.timestamp, profile.last_event_at
    long_half_life = config.long_term_half_life_days * 86_400.0
    if last is not None and t > last:  # both sums are kept decayed to the newest event's time
        profile.long_term = _decayed(profile.long_term, t - last, long_half_life)
        profile.session = _decayed(profile.session, t - last, config.session_half_life_seconds)
    newest = t if last is None else max(last, t)
    _start_or_extend_session(profile, t, config)
    if vector is not None:
        weight = config.weight(event, profile)
        if event.type != "search":
            profile.long_term = _add(profile.long_term, weight * 0.5 ** ((newest - t) / long_half_life), vector)
        if _in_session(profile, t):
            decay = 0.5 ** ((newest - t) / config.session_half_life_seconds)
            profile.session = _add(profile.session, weight * decay, vector)
    if event.type == "rating":
        profile.rating_sum += event.value or 0.0
        profile.rating_count += 1
    if event.item_id is not None:
        if last is None or t >= last:
            profile.recent_items = [event.item_id] + [i for i in profile.recent_items if i != event.item_id]
        elif event.item_id not in profile.recent_items:
            profile.recent_items.append(event.item_id)
        profile.recent_items = profile.recent_items[: config.recent_items]
        if len(profile.consumed) < config.consumed_items:
            profile.consumed.add(event.item_id)
    profile.last_event_at = newest
    profile.event_count += 1


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
