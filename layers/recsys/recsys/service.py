"""The recommender as the API sees it: each public method is one route's work."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from recsys import privacy, ranking
from recsys.catalog import parse_item
from recsys.events import (
    CLIENT_EVENT_TYPES,
    IMPRESSION,
    MAX_EVENTS_PER_REQUEST,
    MAX_IMPRESSION_ITEMS,
    MAX_QUERY_LENGTH,
    Event,
    InvalidEvent,
    parse_event,
)
from recsys.experiments import CONTROL, Variant, assign
from recsys.live import LiveCatalog, Unavailable
from recsys.ports import EventStream, Impression, Impressions, Items, Metrics, Profiles, RawEvents, TextEncoder
from recsys.profile import Profile, in_encoder
from recsys.ranking import NO_FILTERS
from recsys.selection import Filters

MAX_METRICS_DAYS = 366
DEFAULT_METRICS_DAYS = 30

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    code = "bad_request"


class NotFound(LookupError):
    code = "not_found"


@dataclass
class Recommender:
    """The API's work over its stores (recsys.ports); recsys.wiring.recommender builds one
    from settings."""
    encoder: TextEncoder
    catalog: LiveCatalog
    items: Items
    profiles: Profiles
    stream: EventStream
    raw_events: RawEvents
    impressions: Impressions
    metrics_store: Metrics
    variants: tuple[Variant, ...] = CONTROL
    clock: Callable[[], float] = time.time

    def health(self) -> dict[str, Any]:
        """"ok" once the catalog is loaded (a release, the items since, the popularity
        counters: `LiveCatalog.waiting_for`), "no_release" when loaded and no release was
        ever published (an empty catalog), "loading" (with what it waits for) before. Also
        says which release is served, why a newer one was refused, if it was, and why the
        last refresh failed while the last good state serves (`refresh_error`)."""
        items = len(self.catalog.index())
        release, waiting = self.catalog.release, self.catalog.waiting_for()
        status = "loading" if waiting else "ok" if release else "no_release"
        return {"status": status, **({"waiting_for": waiting} if waiting else {}), "items": items,
                "model_version": self.encoder.version, "release": release.version if release else None,
                "release_error": self.catalog.release_error, "refresh_error": self.catalog.refresh_error}

    def put_item(self, item_id: str, body: Any) -> dict[str, Any]:
        try:
            item = parse_item(item_id, body)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        self.items.put(item)
        return item.to_json()

    def delete_item(self, item_id: str) -> dict[str, Any]:
        """Retire an item for good (until a PUT brings it back): it leaves every list within
        the live catalog's refresh, its events stay in users' histories. Idempotent: deleting
        a deleted item answers the same; an id never stored is not found."""
        if not self.items.delete(item_id, self.clock()):
            raise NotFound(f"item {item_id} not found")
        return {"item_id": item_id, "deleted": True}

    def get_item(self, item_id: str) -> dict[str, Any]:
        item = self.items.get(item_id)
        if item is None:
            raise NotFound(f"item {item_id} not found")
        return item.to_json()

    def similar(self, item_id: str, k: int, filters: Filters = NO_FILTERS) -> dict[str, Any]:
        found = ranking.similar(self.catalog.index(), item_id, k, filters)
        if found is None:
            raise NotFound(f"item {item_id} not found, retired, or not encoded yet")
        return {"item_id": item_id, "model_version": self.encoder.version, "items": _scored(found)}

    def recommend(self, user_id: str, k: int, context: str | None, filters: Filters = NO_FILTERS,
                  diversity: float | None = None, explore: float | None = None) -> dict[str, Any]:
        """The user's list; `diversity` and `explore` default to the user's variant's."""
        recommendation_id = str(uuid.uuid4())
        variant, diversity, explore, ranked = self.ranked(user_id, k, context, filters, diversity, explore,
                                                          np.random.default_rng(uuid.UUID(recommendation_id).int))
        self._record(Impression(recommendation_id, user_id, variant.name, self.encoder.version,
                                [r.item_id for r in ranked], self.clock(), [r.item_id for r in ranked if r.explored]))
        return {"recommendation_id": recommendation_id, "user_id": user_id, "variant": variant.name,
                "model_version": self.encoder.version, "diversity": diversity, "explore": explore,
                "items": [r.to_json(n) for n, r in enumerate(ranked)]}

    def ranked(self, user_id: str, k: int, context: str | None = None, filters: Filters = NO_FILTERS,
               diversity: float | None = None, explore: float | None = None,
               rng: np.random.Generator | None = None) -> tuple[Variant, float, float, list[ranking.RankedItem]]:
        """The user's list as the recommendations route ranks it, without recording it as
        served (batch lists use this too); `diversity` and `explore` default to the variant's."""
        variant = assign(user_id, self.variants)
        diversity = variant.diversity if diversity is None else diversity
        explore = variant.explore if explore is None else explore
        request = self._request(k, context, filters, diversity, explore)
        index, profile, collaborative, weights = self._state(user_id, variant)
        return variant, diversity, explore, ranking.rank(index, profile, request, weights, collaborative, rng)

    def rank(self, user_id: str, item_ids: list[str], context: str | None) -> dict[str, Any]:
        """The given items in the user's order (consumed ones too: the caller chose the list);
        ids not in the catalog are reported in `unknown_item_ids`, retired ones (deleted or
        unavailable) in `unavailable_item_ids`, and neither is ranked."""
        variant = assign(user_id, self.variants)
        request = self._request(len(item_ids), context)
        index, profile, collaborative, weights = self._state(user_id, variant)
        ranked, unknown, unavailable = ranking.order(index, profile, item_ids, request, weights, collaborative)
        recommendation_id = str(uuid.uuid4())
        self._record(Impression(recommendation_id, user_id, variant.name, self.encoder.version,
                                [r.item_id for r in ranked], self.clock()))
        return {"recommendation_id": recommendation_id, "user_id": user_id, "variant": variant.name,
                "model_version": self.encoder.version, "items": [r.to_json(n) for n, r in enumerate(ranked)],
                "unknown_item_ids": unknown, "unavailable_item_ids": unavailable}

    def trending(self, k: int, category: str | None) -> dict[str, Any]:
        ranked = ranking.trending(self.catalog.index(), k, category)
        return {"category": category, "items": _scored(ranked)}

    def submit_events(self, body: Any) -> dict[str, Any]:
        raw_events = body.get("events") if isinstance(body, dict) else body
        if not isinstance(raw_events, list) or not raw_events:
            raise BadRequest('the body must be {"events": [...]} with at least one event')
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        now, parsed, errors, seen = self.clock(), [], [], set()
        for position, raw in enumerate(raw_events):
            try:
                event = parse_event(raw, now, allowed=CLIENT_EVENT_TYPES)
            except InvalidEvent as error:
                errors.append(_event_error(position, raw, "invalid_event", str(error)))
                continue
            # A user's event id names one event (profiles and counters apply it once): a second
            # one in the same request is reported, not sent.
            if (event.user_id, event.event_id) in seen:
                errors.append(_event_error(position, raw, "duplicate_event",
                                           f"event_id {event.event_id} of user {event.user_id} is earlier in "
                                           "this request; it is applied once"))
                continue
            seen.add((event.user_id, event.event_id))
            parsed.append((position, event))
        unsent = {id(event) for event in self.stream.put([event for _, event in parsed])}
        if parsed and len(unsent) == len(parsed):
            raise Unavailable(f"the event stream took none of the {len(parsed)} valid events; send them again")
        errors += [_event_error(position, event.to_json(), "throttled", "the event stream is busy; send it again")
                   for position, event in parsed if id(event) in unsent]
        return {"accepted": len(parsed) - len(unsent), "errors": sorted(errors, key=lambda e: e["index"])}

    def user_data(self, user_id: str) -> dict[str, Any]:
        data = privacy.user_data(user_id, self.profiles.get(user_id), self.catalog.index(),
                                 len(self.impressions.ids_of(user_id)), sum(1 for _ in self.raw_events.keys(user_id)))
        return {**data, "variant": assign(user_id, self.variants).name}

    def erase_user(self, user_id: str) -> dict[str, Any]:
        return {"user_id": user_id,
                "removed": privacy.erase_user(user_id, self.profiles, self.raw_events, self.impressions,
                                              self.clock())}

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
    def _request(self, k: int, context: str | None, filters: Filters = NO_FILTERS,
                 diversity: float = 0.0, explore: float = 0.0) -> ranking.Request:
        text, vector = None, None
        if context is not None and context.strip():
            text = context.strip()
            if len(text) > MAX_QUERY_LENGTH:
                raise BadRequest(f"context must be at most {MAX_QUERY_LENGTH} characters")
            vector = self.encoder.encode([text])[0]
        return ranking.Request(k=k, now=self.clock(), context=vector, context_text=text, filters=filters,
                               diversity=diversity, explore=explore)

    def _state(self, user_id: str, variant: Variant) -> tuple[Any, Profile | None, Any, Any]:
        """The index, the user's profile (as this encoder reads it: `in_encoder`), the
        collaborative model and the variant's weights."""
        index = self.catalog.index()
        collaborative, fitted = self.catalog.scorer()
        profile = in_encoder(self.profiles.get(user_id), self.encoder.version, self.encoder.dim)
        return index, profile, collaborative, variant.blend(fitted)

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


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def _scored(ranked: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"item_id": item_id, "score": score} for item_id, score in ranked]


def _event_error(position: int, raw: Any, code: str, message: str) -> dict[str, Any]:
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return {"index": position, "event_id": event_id if isinstance(event_id, str) else None,
            "code": code, "message": message}
