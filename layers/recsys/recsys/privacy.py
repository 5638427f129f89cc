"""What the system holds about a user, and erasing all of it (the API's GET and DELETE
/users/{user_id}, and `python -m ops erase-user`)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from recsys.index import ItemIndex
from recsys.ports import Impressions, Profiles, RawEvents
from recsys.profile import Profile

TOP_CATEGORIES = 10


def erase_user(user_id: str, profiles: Profiles, raw_events: RawEvents,
               impressions: Impressions | None) -> dict[str, int]:
    """Deletes the profile (with the fingerprints of applied events that dedupe
    redeliveries), every raw event object and every impression of the user, synchronously;
    returns how many of each were removed. Aggregates that name no user (popularity and
    metrics counters) stay."""
    profile = profiles.get(user_id)
    removed = {"profiles": profiles.delete(user_id),
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
        "profile": profile is not None,
        "event_count": profile.event_count if profile else 0,
        "recent_items": list(profile.recent_items) if profile else [],
        "consumed_count": len(consumed),
        "top_categories": [{"category": c, "items": n} for c, n in categories.most_common(TOP_CATEGORIES)],
        "ratings": {"count": profile.rating_count if profile else 0,
                    "mean": round(profile.rating_sum / profile.rating_count, 3)
                    if profile and profile.rating_count else None},
        "last_event_at": profile.last_event_at if profile else None,
        "has_taste_vector": bool(profile and profile.long_term is not None),
        "has_session_vector": bool(profile and profile.session is not None),
        "dedupe_records": len(profile.applied_events) if profile else 0,
        "raw_event_objects": raw_event_objects,
        "impressions": impressions,
    }
