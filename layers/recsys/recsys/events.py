"""User behaviour events: what a client may send, and how each one is checked."""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "search", "hide", "dislike")
ITEM_EVENT_TYPES = frozenset(EVENT_TYPES) - {"search"}
MAX_EVENTS_PER_REQUEST = 500
MAX_ID_LENGTH = 128
MAX_QUERY_LENGTH = 512
MAX_DWELL_SECONDS = 86_400.0
MAX_FUTURE_SKEW_SECONDS = 300.0
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@|/+=-]+$")
FIELDS = ("event_id", "user_id", "type", "item_id", "timestamp", "dwell_seconds", "value",
          "query", "recommendation_id")


class InvalidEvent(ValueError):
    """An event that can never be applied; the message says why."""


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    type: str
    timestamp: float
    item_id: str | None = None
    dwell_seconds: float | None = None
    value: float | None = None
    query: str | None = None
    recommendation_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_event(raw: Any, now: float | None = None) -> Event:
    """Validate one event as a client sent it; a missing timestamp means `now`."""
    now = time.time() if now is None else now
    if not isinstance(raw, dict):
        raise InvalidEvent("an event must be a JSON object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)}")
    event_type = raw.get("type")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"type must be one of {', '.join(EVENT_TYPES)}")
    item_id = _optional_id(raw, "item_id")
    if event_type in ITEM_EVENT_TYPES and item_id is None:
        raise InvalidEvent(f"a {event_type} event needs item_id")
    query = raw.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()
                              or len(query) > MAX_QUERY_LENGTH):
        raise InvalidEvent(f"query must be a non-empty string of at most {MAX_QUERY_LENGTH} characters")
    if event_type == "search" and query is None:
        raise InvalidEvent("a search event needs query")
    value = _optional_number(raw, "value", 0.0, 5.0)
    if event_type == "rating" and value is None:
        raise InvalidEvent("a rating event needs value between 0 and 5")
    timestamp = _timestamp(raw.get("timestamp"), now)
    return Event(
        event_id=_required_id(raw, "event_id"),
        user_id=_required_id(raw, "user_id"),
        type=event_type,
        timestamp=timestamp,
        item_id=item_id,
        dwell_seconds=_optional_number(raw, "dwell_seconds", 0.0, MAX_DWELL_SECONDS),
        value=value,
        query=query.strip() if query else None,
        recommendation_id=_optional_id(raw, "recommendation_id"),
    )


def validate_id(name: str, value: Any) -> str:
    """An id (user, item, event) as the API accepts it; raises InvalidEvent naming the field."""
    return _required_id({name: value}, name)


def _required_id(raw: dict, name: str) -> str:
    value = _optional_id(raw, name)
    if value is None:
        raise InvalidEvent(f"{name} is required")
    return value


def _optional_id(raw: dict, name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or not ID_PATTERN.fullmatch(value):
        raise InvalidEvent(f"{name} must be 1-{MAX_ID_LENGTH} characters of letters, digits and _.:@|/+=-")
    return value


def _optional_number(raw: dict, name: str, low: float, high: float) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise InvalidEvent(f"{name} must be a number between {low:g} and {high:g}")
    return float(value)


def _timestamp(value: Any, now: float) -> float:
    """Epoch seconds (a number) or ISO 8601 with a timezone; not in the future."""
    if value is None:
        return now
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent("timestamp must be epoch seconds or ISO 8601") from None
        if parsed.tzinfo is None:
            raise InvalidEvent("an ISO 8601 timestamp needs a timezone, e.g. 2024-05-01T12:00:00Z")
        seconds = parsed.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    else:
        raise InvalidEvent("timestamp must be epoch seconds or ISO 8601")
    if seconds < 0:
        raise InvalidEvent("timestamp must not be before 1970")
    if seconds > now + MAX_FUTURE_SKEW_SECONDS:
        raise InvalidEvent("timestamp is in the future")
    return seconds
