"""The recommender as the API sees it: each public method is one route's work."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np

from recsys import privacy, scoring, selection
from recsys.catalog import parse_item
from recsys.collaborative import CollaborativeModel
from recsys.events import (
    CLIENT_EVENT_TYPES,
    IMPRESSION,
    MAX_EVENTS_PER_REQUEST,
    MAX_IMPRESSION_ITEMS,
    MAX_QUERY_LENGTH,
    Event,
    InvalidEvent,
    parse_event,
    validate_id,
)
from recsys.experiments import assign, parse_variants
from recsys.live import LiveCatalog, encoder_for
from recsys.profile import Profile
from recsys.reasons import explain
from recsys.settings import Settings
from recsys.storage import (
    EventStream,
    Impression,
    ImpressionStore,
    ItemRepository,
    MetricsStore,
    PopularityStore,
    ProfileRepository,
    RawEventLog,
    Releases,
)

MAX_K = 100
MAX_CATEGORY_LENGTH = 128
MAX_METRICS_DAYS = 366
DEFAULT_METRICS_DAYS = 30

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    code = "bad_request"


class NotFound(LookupError):
    code = "not_found"


class RequestFilters(NamedTuple):
    """The filter parameters as a request names them (see recsys.selection.parse_filters)."""
    exclude: str | None = None
    categories: str | None = None
    exclude_categories: str | None = None
    attributes: str | None = None
    minimum: str | None = None
    maximum: str | None = None
    include_consumed: bool = False

    def parse(self) -> selection.Filters:
        try:
            return selection.parse_filters(*self)
        except ValueError as error:
            raise BadRequest(str(error)) from None


@dataclass
class Recommender:
    settings: Settings

    def __post_init__(self) -> None:
        self.settings.require("profiles_table", "items_table", "events_stream", "artifacts_bucket",
                              "raw_events_bucket", "impressions_table", "metrics_table")
        self.encoder = encoder_for(self.settings)
        self.items = ItemRepository(self.settings)
        self.profiles = ProfileRepository(self.settings)
        self.stream = EventStream(self.settings)
        self.raw_events = RawEventLog(self.settings)
        self.impressions = ImpressionStore(self.settings)
        self.metrics_store = MetricsStore(self.settings)
        self.variants = parse_variants(self.settings.variants)
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

    def similar(self, item_id: str, k: Any, filters: RequestFilters = RequestFilters()) -> dict[str, Any]:
        k, wanted = parse_k(k), filters.parse()
        index = self.catalog.index()
        vector = index.vector(_item_id(item_id))
        if vector is None:
            raise NotFound(f"item {item_id} not found, or not encoded yet")
        scores = index.vectors @ vector
        mask = selection.allowed(index, wanted)
        mask[index.rows[item_id]] = False
        rows = selection.best(scores, mask, k)
        return {"item_id": item_id, "model_version": self.encoder.version,
                "items": [{"item_id": index.ids[r], "score": round(float(scores[r]), 6)} for r in rows]}

    def recommend(self, user_id: str, k: Any, context: str | None, filters: RequestFilters = RequestFilters(),
                  diversity: float | None = None, explore: float | None = None) -> dict[str, Any]:
        user_id, k, wanted = _user_id(user_id), parse_k(k), filters.parse()
        variant = assign(user_id, self.variants)
        diversity = variant.diversity if diversity is None else _share("diversity", diversity)
        explore = variant.explore if explore is None else _share("explore", explore)
        context, context_vector = self._context(context)
        scored = self._score(user_id, context_vector, variant)
        index, profile = scored.index, scored.profile
        mask = selection.allowed(index, wanted, profile.consumed if profile else frozenset())
        recommendation_id = str(uuid.uuid4())
        rng = np.random.default_rng(uuid.UUID(recommendation_id).int)
        rows, explored = selection.select(index, scored.scores, mask, k, diversity, explore, rng)
        items = self._explained(scored, rows, explored, context)
        self._record(Impression(recommendation_id, user_id, variant.name, self.encoder.version,
                                [entry["item_id"] for entry in items], time.time(),
                                [index.ids[r] for r in rows if r in explored]))
        return {"recommendation_id": recommendation_id, "user_id": user_id, "variant": variant.name,
                "model_version": self.encoder.version, "diversity": diversity, "explore": explore, "items": items}

    def rank(self, user_id: str, item_ids: list[str], context: str | None) -> dict[str, Any]:
        """The given items in the user's order (consumed ones too: the caller chose the list)."""
        user_id = _user_id(user_id)
        variant = assign(user_id, self.variants)
        context, context_vector = self._context(context)
        scored = self._score(user_id, context_vector, variant)
        index = scored.index
        known, unknown, seen = [], [], set()
        for item_id in item_ids:
            if item_id in seen:
                continue
            seen.add(item_id)
            (known if item_id in index.rows else unknown).append(item_id)
        rows = [index.rows[i] for i in known]
        rows.sort(key=lambda r: -float(scored.scores[r]))
        recommendation_id = str(uuid.uuid4())
        items = self._explained(scored, rows, set(), context)
        self._record(Impression(recommendation_id, user_id, variant.name, self.encoder.version,
                                [entry["item_id"] for entry in items], time.time()))
        return {"recommendation_id": recommendation_id, "user_id": user_id, "variant": variant.name,
                "model_version": self.encoder.version, "items": items, "unknown_item_ids": unknown}

    def trending(self, k: Any, category: str | None) -> dict[str, Any]:
        if category is not None and not (0 < len(category) <= MAX_CATEGORY_LENGTH):
            raise BadRequest(f"category must be 1-{MAX_CATEGORY_LENGTH} characters")
        ranked = scoring.trending(self.catalog.index(), parse_k(k), category)
        return {"category": category, "items": _scored(ranked)}

    def submit_events(self, body: Any) -> dict[str, Any]:
        raw_events = body.get("events") if isinstance(body, dict) else body
        if not isinstance(raw_events, list) or not raw_events:
            raise BadRequest('the body must be {"events": [...]} with at least one event')
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        now, parsed, errors = time.time(), [], []
        for position, raw in enumerate(raw_events):
            try:
                parsed.append((position, parse_event(raw, now, allowed=CLIENT_EVENT_TYPES)))
            except InvalidEvent as error:
                errors.append(_event_error(position, raw, "invalid_event", str(error)))
        unsent = {id(event) for event in self.stream.put([event for _, event in parsed])}
        errors += [_event_error(position, event.to_json(), "throttled", "the event stream is busy; send it again")
                   for position, event in parsed if id(event) in unsent]
        return {"accepted": len(parsed) - len(unsent), "errors": sorted(errors, key=lambda e: e["index"])}

    def user_data(self, user_id: str) -> dict[str, Any]:
        user_id = _user_id(user_id)
        data = privacy.user_data(user_id, self.profiles.get(user_id), self.catalog.index(),
                                 len(self.impressions.ids_of(user_id)), sum(1 for _ in self.raw_events.keys(user_id)))
        return {**data, "variant": assign(user_id, self.variants).name}

    def erase_user(self, user_id: str) -> dict[str, Any]:
        user_id = _user_id(user_id)
        return {"user_id": user_id,
                "removed": privacy.erase_user(user_id, self.profiles, self.raw_events, self.impressions)}

    def metrics(self, first: date | None, last: date | None, variant: str | None) -> dict[str, Any]:
        last = last or datetime.now(UTC).date()
        first = first or last - timedelta(days=DEFAULT_METRICS_DAYS - 1)
        if first > last or (last - first).days >= MAX_METRICS_DAYS:
            raise BadRequest(f"from must not be after to, and the range at most {MAX_METRICS_DAYS} days")
        rows = self.metrics_store.read(first.isoformat(), last.isoformat(), variant)
        return {"from": first.isoformat(), "to": last.isoformat(),
                "variants": [{"name": v.name, "share": v.share} for v in self.variants],
                "days": [{**row, "ctr": _rate(row["clicks"], row["impressions"]),
                          "conversion_rate": _rate(row["conversions"], row["impressions"])} for row in rows]}

    # ---- shared steps ------------------------------------------------------------
    def _context(self, context: str | None) -> tuple[str | None, np.ndarray | None]:
        if context is None:
            return None, None
        context = context.strip()
        if len(context) > MAX_QUERY_LENGTH:
            raise BadRequest(f"context must be at most {MAX_QUERY_LENGTH} characters")
        return (context, self.encoder.encode([context])[0]) if context else (None, None)

    def _score(self, user_id: str, context_vector: np.ndarray | None, variant) -> _Scored:
        index = self.catalog.index()
        collaborative, fitted = self.catalog.scorer()
        weights = variant.blend(fitted)
        profile = self.profiles.get(user_id)
        parts = scoring.components(index, profile, context_vector, time.time(), weights,
                                   collaborative=collaborative)
        return _Scored(index, profile, collaborative, weights, parts, scoring.combine(parts, weights))

    def _explained(self, scored: _Scored, rows: list[int], explored: set[int],
                   context: str | None) -> list[dict[str, Any]]:
        history = {}  # per row model, the history items behind each row's score
        if scored.collaborative is not None and scored.profile is not None:
            weights = scoring.history_weights(scored.profile, scored.weights.recency_half_life,
                                              scored.weights.recency_floor)
            history = {name: scored.collaborative.contributions(weights, rows, component=name)
                       for name in CollaborativeModel.ROW_MODELS if name in scored.parts}
        reasons = explain(scored.index, scored.parts, scored.weights, rows, explored, history, context)
        return [{"item_id": scored.index.ids[r], "position": n, "score": round(float(scored.scores[r]), 6),
                 "explored": r in explored, "reasons": why}
                for n, (r, why) in enumerate(zip(rows, reasons, strict=True))]

    def _record(self, impression: Impression) -> None:
        """Every list served is an impression: stored for attribution, counted for its variant,
        and put on the event stream (one event per MAX_IMPRESSION_ITEMS items; the first
        one's id is the recommendation id) so the popularity function counts each item shown."""
        self.impressions.put(impression)
        self.metrics_store.add(impression.variant, impression.day, impressions=1)
        events = [Event(event_id=impression.recommendation_id if start == 0
                        else f"{impression.recommendation_id}:{start // MAX_IMPRESSION_ITEMS}",
                        user_id=impression.user_id, type=IMPRESSION, timestamp=impression.created_at,
                        recommendation_id=impression.recommendation_id,
                        item_ids=tuple(impression.items[start:start + MAX_IMPRESSION_ITEMS]))
                  for start in range(0, len(impression.items), MAX_IMPRESSION_ITEMS)]
        unsent = self.stream.put(events) if events else []
        if unsent:
            log.warning("impressions of %s not put on the stream (throttled): %d event(s)",
                        impression.recommendation_id, len(unsent))


class _Scored(NamedTuple):
    index: Any
    profile: Profile | None
    collaborative: Any
    weights: scoring.BlendWeights
    parts: dict[str, np.ndarray]
    scores: np.ndarray


def _share(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number between 0 and 1") from None
    if not 0 <= number <= 1:
        raise BadRequest(f"{name} must be a number between 0 and 1")
    return number


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


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
