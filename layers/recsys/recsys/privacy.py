"""What the system holds about a user, and erasing all of it (the API's GET and DELETE
/users/{user_id}, and `python -m ops erase-user`).

An erase leaves a tombstone in place of the profile for TOMBSTONE_SECONDS: events from
before the erase that are still in flight are dropped instead of recreating the profile.
The longest an event waits before it is applied is its age limit on the stream (the
mapping's MaximumRecordAgeInSeconds, 1 h; the stream keeps 24 h) plus the dead-letter
queue's retention (14 days, redriven by `ops redrive`): the tombstone outlives both
(tests/unit/test_template.py checks it against the template).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from recsys.index import ItemIndex
from recsys.ports import Impressions, Profiles, RawEvents
from recsys.profile import Profile

TOP_CATEGORIES = 10
TOMBSTONE_SECONDS = 15 * 86_400


def erase_user(user_id: str, profiles: Profiles, raw_events: RawEvents,
               impressions: Impressions | None, now: float) -> dict[str, int]:
    """Replaces the profile with a tombstone (dropping the fingerprints of applied events
    that dedupe redeliveries: the tombstone drops every event until `now` instead), deletes
    every raw event object and every impression of the user, synchronously; returns how
    many of each were removed. Aggregates that name no user (popularity and metrics
    counters) stay."""
    profile = profiles.get(user_id)
    removed = {"profiles": profiles.erase(user_id, now, TOMBSTONE_SECONDS),
               "dedupe_records": len(profile.applied_events) if profile else 0,
               "raw_event_objects": raw_events.erase(user_id)}
    if impressions is not None:
        removed["impressions"] = impressions.erase(user_id)
    return removed


def user_data(user_id: str, profile: Profile | None, index: ItemIndex, impressions: int,
              raw_event_objects: int) -> dict[str, Any]:
    """Everything held about the user, as the user could read it."""
    consumed = sorted(profile.consumed) if profile else []
    categories = Counter(label for item_id in consumed if item_id in index.rows
                         for label in index.categories[index.rows[item_id]])
    return {
        "user_id": user_id,
        "profile": bool(profile and profile.event_count),
        "event_count": profile.event_count if profile else 0,
        "recent_items": list(profile.recent_items) if profile else [],
        "consumed_count": len(consumed),
        "top_categories": [{"category": c, "items": n} for c, n in categories.most_common(TOP_CATEGORIES)],
        "ratings": {"count": profile.rating_count if profile else 0,
                    "mean": round(profile.rating_sum / profile.rating_count, 3)
                    if profile and profile.rating_count else None},
        "last_event_at": profile.last_event_at if profile else None,
        "erased_at": profile.erased_at if profile else None,
        "has_taste_vector": bool(profile and profile.long_term is not None),
        "has_session_vector": bool(profile and profile.session is not None),
        "dedupe_records": len(profile.applied_events) if profile else 0,
        "raw_event_objects": raw_event_objects,
        "impressions": impressions,
    }
