"""The recommender as the API sees it: each public method is one route's work."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from recsys import scoring
from recsys.catalog import parse_item
from recsys.events import MAX_EVENTS_PER_REQUEST, MAX_QUERY_LENGTH, InvalidEvent, parse_event, validate_id
from recsys.live import LiveCatalog, encoder_for
from recsys.settings import Settings
from recsys.storage import EventStream, ItemRepository, PopularityStore, ProfileRepository, Releases

MAX_K = 100
MAX_CATEGORY_LENGTH = 128


class BadRequest(ValueError):
    code = "bad_request"


class NotFound(LookupError):
    code = "not_found"


@dataclass
class Recommender:
    settings: Settings

    def __post_init__(self) -> None:
        self.settings.require("profiles_table", "items_table", "events_stream", "artifacts_bucket")
        self.encoder = encoder_for(self.settings)
        self.items = ItemRepository(self.settings)
        self.profiles = ProfileRepository(self.settings)
        self.stream = EventStream(self.settings)
        self.catalog = LiveCatalog(Releases(self.settings), self.items, self.encoder.version, self.encoder.dim,
                                   popularity=PopularityStore(self.settings))

    def health(self) -> dict[str, Any]:
        """Also says which release is served, and why a newer one was refused, if it was."""
        items = len(self.catalog.index())
        release = self.catalog.release
        return {"status": "ok", "items": items, "model_version": self.encoder.version,
                "release": release.version if release else None, "release_error": self.catalog.release_error}

    def put_item(self, item_id: str, body: Any) -> dict[str, Any]:
        try:
            item = parse_item(item_id, body)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        self.items.put(item)
        return item.to_json()

    def get_item(self, item_id: str) -> dict[str, Any]:
        item = self.items.get(_item_id(item_id))
        if item is None:
            raise NotFound(f"item {item_id} not found")
        return item.to_json()

    def similar(self, item_id: str, k: Any) -> dict[str, Any]:
        index = self.catalog.index()
        if _item_id(item_id) not in index.rows:
            raise NotFound(f"item {item_id} not found, or not encoded yet")
        return {"item_id": item_id, "model_version": self.encoder.version,
                "items": _scored(scoring.similar(index, item_id, parse_k(k)))}

    def recommend(self, user_id: str, k: Any, context: str | None) -> dict[str, Any]:
        user_id = _user_id(user_id)
        k = parse_k(k)
        context_vector = None
        if context is not None:
            context = context.strip()
            if len(context) > MAX_QUERY_LENGTH:
                raise BadRequest(f"context must be at most {MAX_QUERY_LENGTH} characters")
            if context:
                context_vector = self.encoder.encode([context])[0]
        index = self.catalog.index()
        collaborative, weights = self.catalog.scorer()
        ranked = scoring.recommend(index, self.profiles.get(user_id), context_vector, k, now=time.time(),
                                   weights=weights, collaborative=collaborative)
        return {"recommendation_id": str(uuid.uuid4()), "user_id": user_id,
                "model_version": self.encoder.version, "items": _scored(ranked)}

    def trending(self, k: Any, category: str | None) -> dict[str, Any]:
        if category is not None and not (0 < len(category) <= MAX_CATEGORY_LENGTH):
            raise BadRequest(f"category must be 1-{MAX_CATEGORY_LENGTH} characters")
        ranked = scoring.trending(self.catalog.index(), parse_k(k), category)
        return {"category": category, "items": _scored(ranked)}

    def submit_events(self, body: Any) -> dict[str, Any]:
        raw_events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(raw_events, list) or not raw_events:
            raise BadRequest('the body must be {"events": [...]} with at least one event')
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        now, parsed, errors = time.time(), [], []
        for position, raw in enumerate(raw_events):
            try:
                parsed.append((position, parse_event(raw, now)))
            except InvalidEvent as error:
                errors.append(_event_error(position, raw, "invalid_event", str(error)))
        unsent = {id(event) for event in self.stream.put([event for _, event in parsed])}
        errors += [_event_error(position, event.to_json(), "throttled", "the event stream is busy; send it again")
                   for position, event in parsed if id(event) in unsent]
        return {"accepted": len(parsed) - len(unsent), "errors": sorted(errors, key=lambda e: e["index"])}


def parse_k(k: Any) -> int:
    if k is None:
        return 10
    try:
        value = int(k)
    except (TypeError, ValueError):
        raise BadRequest(f"k must be an integer between 1 and {MAX_K}") from None
    if not 1 <= value <= MAX_K:
        raise BadRequest(f"k must be an integer between 1 and {MAX_K}")
    return value


def _item_id(item_id: str) -> str:
    return _id("item_id", item_id)


def _user_id(user_id: str) -> str:
    return _id("user_id", user_id)


def _id(name: str, value: str) -> str:
    try:
        return validate_id(name, value)
    except InvalidEvent as error:
        raise BadRequest(str(error)) from None


def _scored(ranked: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"item_id": item_id, "score": score} for item_id, score in ranked]


def _event_error(position: int, raw: Any, code: str, message: str) -> dict[str, Any]:
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return {"index": position, "event_id": event_id if isinstance(event_id, str) else None,
            "code": code, "message": message}
