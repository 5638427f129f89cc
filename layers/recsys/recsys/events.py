"""User behaviour events: what a client may send, and how each one is checked.

One more type is the API's own: an `impression` names the items of a list it served
(`item_ids`), so the popularity function can count how often each item was shown.
Clients cannot send it (`parse_event(..., allowed=CLIENT_EVENT_TYPES)`).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

CLIENT_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "search", "hide", "dislike")
IMPRESSION = "impression"
EVENT_TYPES = (*CLIENT_EVENT_TYPES, IMPRESSION)
ITEM_EVENT_TYPES = frozenset(CLIENT_EVENT_TYPES) - {"search"}
MAX_IMPRESSION_ITEMS = 100
MAX_EVENTS_PER_REQUEST = 500
MAX_ID_LENGTH = 128
MAX_QUERY_LENGTH = 512
MAX_DWELL_SECONDS = 86_400.0
MAX_FUTURE_SKEW_SECONDS = 300.0
# No "/": an id is one path segment of every route that names it (GET /items/{id}/similar,
# DELETE /users/{id}), so an id with a slash could be written but never read or erased.
ID_CHARACTERS = "letters, digits and _.:@|+=-"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@|+=-]+$")
FIELDS = ("event_id", "user_id", "type", "item_id", "timestamp", "dwell_seconds", "value",
          "query", "recommendation_id", "item_ids")


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
    item_ids: tuple[str, ...] | None = None  # an impression's list, in order

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


def parse_event(raw: Any, now: float | None = None, allowed: tuple[str, ...] = EVENT_TYPES) -> Event:
    """Validate one event; a missing timestamp means `now`. `allowed` narrows the types
    (the API passes CLIENT_EVENT_TYPES for what clients send)."""
    now = time.time() if now is None else now
    if not isinstance(raw, dict):
        raise InvalidEvent("an event must be a JSON object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)}")
    event_type = raw.get("type")
    if event_type == IMPRESSION and IMPRESSION not in allowed:
        raise InvalidEvent("impression events are recorded by the API itself when it serves a list; "
                           "clients cannot send them")
    if event_type not in allowed:
        raise InvalidEvent(f"type must be one of {', '.join(allowed)}")
    item_id = _optional_id(raw, "item_id")
    item_ids = _impression_items(raw, event_type)
    if event_type == IMPRESSION and item_id is not None:
        raise InvalidEvent("an impression event names its items in item_ids, not item_id")
    if event_type in ITEM_EVENT_TYPES and item_id is None:
        raise InvalidEvent(f"a {event_type} event needs item_id")
    query = raw.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()
                              or len(query) > MAX_QUERY_LENGTH):
        raise InvalidEvent(f"query must be a non-empty string of at most {MAX_QUERY_LENGTH} characters")
    if query is not None and not is_text(query):
        raise InvalidEvent("query must be valid Unicode text (it holds a lone surrogate)")
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
        item_ids=item_ids,
    )


def _impression_items(raw: dict, event_type: str) -> tuple[str, ...] | None:
    value = raw.get("item_ids")
    if event_type != IMPRESSION:
        if value is not None:
            raise InvalidEvent("item_ids is only for impression events")
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IMPRESSION_ITEMS:
        raise InvalidEvent(f"an impression event needs item_ids: a list of 1-{MAX_IMPRESSION_ITEMS} item ids")
    ids = tuple(_required_id({"item_ids": v}, "item_ids") for v in value)
    if len(set(ids)) != len(ids):
        raise InvalidEvent("item_ids must not name an item twice")
    return ids


def is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float: not a boolean, not inf/nan, not an integer too
    large for a float (a 400-digit one overflows instead of comparing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_text(value: str) -> bool:
    """Whether a string can be stored and encoded: JSON's \\ud800 escapes decode to lone
    surrogates, which UTF-8 (DynamoDB, Kinesis, the tokenizer) cannot hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        raise InvalidEvent(f"{name} must be 1-{MAX_ID_LENGTH} characters of {ID_CHARACTERS}")
    return value


def _optional_number(raw: dict, name: str, low: float, high: float) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if not is_finite_number(value) or not low <= value <= high:
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
    elif is_finite_number(value):
        seconds = float(value)
    else:
        raise InvalidEvent("timestamp must be epoch seconds or ISO 8601")
    if seconds < 0:
        raise InvalidEvent("timestamp must not be before 1970")
    if seconds > now + MAX_FUTURE_SKEW_SECONDS:
        raise InvalidEvent("timestamp is in the future")
    return seconds
