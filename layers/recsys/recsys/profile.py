"""A user's profile in the encoder's space, and how each event moves it.

The long-term vector is a time-decayed weighted sum of the vectors of what the user
touched; the session vector is the same over the current session only and is
restarted after a gap of inactivity. Both are kept unnormalised: scoring normalises.
"""
from __future__ import annotations

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
    # A click's weight grows with dwell time and saturates: click * (1 + dwell_boost * (1 - e^(-dwell/dwell_scale))).
    dwell_boost: float = 1.5
    dwell_scale_seconds: float = 60.0
    # Ratings are centred: (value - rating_centre) * rating_scale, so a poor rating pushes away.
    rating_centre: float = 2.75
    rating_scale: float = 0.8
    long_term_half_life_days: float = 90.0
    session_gap_seconds: float = 30 * 60.0
    session_decay: float = 0.8
    recent_items: int = 50
    consumed_items: int = 10_000

    def weight(self, event: Event) -> float:
        if event.type == "click":
            dwell = event.dwell_seconds or 0.0
            return self.click * (1.0 + self.dwell_boost * (1.0 - math.exp(-dwell / self.dwell_scale_seconds)))
        if event.type == "rating":
            return ((event.value or 0.0) - self.rating_centre) * self.rating_scale
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
    version: int | None = None

    def session_active(self, now: float, config: ProfileConfig = DEFAULT_CONFIG) -> bool:
        return (self.session is not None and self.last_event_at is not None
                and now - self.last_event_at <= config.session_gap_seconds)


def apply_events(profile: Profile, events: Iterable[Event],
                 vector_of: Callable[[Event], np.ndarray | None],
                 config: ProfileConfig = DEFAULT_CONFIG) -> Profile:
    """Fold events (in time order) into the profile, in place, and return it.

    `vector_of` gives the unit vector an event is about (the item's, or the search
    query's), or None when it has none (an item not yet encoded).
    """
    for event in sorted(events, key=lambda e: e.timestamp):
        _apply(profile, event, vector_of(event), config)
    return profile


def _apply(profile: Profile, event: Event, vector: np.ndarray | None, config: ProfileConfig) -> None:
    now = event.timestamp
    last = profile.last_event_at
    if last is None or now - last > config.session_gap_seconds:
        profile.session = None
        profile.session_started_at = now
    if vector is not None:
        weight = config.weight(event)
        if event.type != "search":
            decay = 1.0
            if profile.long_term is not None and last is not None and now > last:
                decay = 0.5 ** ((now - last) / (config.long_term_half_life_days * 86_400.0))
            profile.long_term = _accumulate(profile.long_term, decay, weight, vector)
        profile.session = _accumulate(profile.session, config.session_decay, weight, vector)
    if event.item_id is not None:
        profile.recent_items = ([event.item_id] + [i for i in profile.recent_items if i != event.item_id]
                                )[: config.recent_items]
        if len(profile.consumed) < config.consumed_items:
            profile.consumed.add(event.item_id)
    profile.last_event_at = now if last is None else max(last, now)
    profile.event_count += 1


def _accumulate(current: np.ndarray | None, decay: float, weight: float, vector: np.ndarray) -> np.ndarray:
    update = weight * vector.astype(np.float32)
    return update if current is None else (decay * current + update).astype(np.float32)


def unit(vector: np.ndarray | None) -> np.ndarray | None:
    if vector is None:
        return None
    norm = float(np.linalg.norm(vector))
    return None if norm < 1e-9 else (vector / norm).astype(np.float32)
