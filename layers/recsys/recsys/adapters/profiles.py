"""Profiles in DynamoDB (pynamodb), written with optimistic locking (the `version` attribute).

A profile is one item, at most 400 KB: recsys.profile bounds each field in bytes, and
`item_size` measures an item as DynamoDB does. Attributes added later read as empty when
a stored profile lacks them (`history_*`, `consumed_filter`).
"""
from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PutError
from pynamodb.models import Model

from recsys.adapters.aws import aws_client, conditional_check_failed, table_meta, vector_bytes, vector_from
from recsys.bloom import BloomFilter
from recsys.ports import ConcurrentUpdate, Unstorable
from recsys.profile import Profile
from recsys.settings import Settings

PROFILE_TTL_SECONDS = 400 * 86_400


@cache
def profile_model(settings: Settings) -> type[Model]:
    class ProfileRecord(Model):
        Meta = table_meta(settings, settings.profiles_table)
        user_id = UnicodeAttribute(hash_key=True)
        long_term = BinaryAttribute(null=True, legacy_encoding=False)
        session = BinaryAttribute(null=True, legacy_encoding=False)
        session_started_at = NumberAttribute(null=True)
        last_event_at = NumberAttribute(null=True)
        recent_items = ListAttribute(of=UnicodeAttribute, default=list)
        consumed = UnicodeSetAttribute(null=True)
        consumed_filter = BinaryAttribute(null=True, legacy_encoding=False)  # recsys.bloom, once consumed is full
        history_items = ListAttribute(of=UnicodeAttribute, null=True)  # most recent first
        history_weights = BinaryAttribute(null=True, legacy_encoding=False)  # float32, one per history item
        event_count = NumberAttribute(default=0)
        rating_sum = NumberAttribute(default=0)
        rating_count = NumberAttribute(default=0)
        applied_events = BinaryAttribute(null=True, legacy_encoding=False)  # uint64 fingerprints
        expires_at = NumberAttribute(null=True)
        erased_at = NumberAttribute(null=True)  # set on a tombstone, and kept by the profile after it
        encoder_version = UnicodeAttribute(null=True)  # the encoder the vectors are in (Profile.encoder_version)
        version = VersionAttribute()

    return ProfileRecord



class ProfileRepository:
    """Profiles in DynamoDB, written with optimistic locking (the `version` attribute)."""

    def __init__(self, settings: Settings) -> None:
        self.model = profile_model(settings)
        self.table = settings.profiles_table
        self.dynamodb = aws_client("dynamodb", settings.region, settings.endpoint_url)

    def get(self, user_id: str) -> Profile | None:
        try:
            record = self.model.get(user_id, consistent_read=True)
        except self.model.DoesNotExist:
            return None
        return Profile(
            user_id=record.user_id, long_term=vector_from(record.long_term), session=vector_from(record.session),
            session_started_at=record.session_started_at, last_event_at=record.last_event_at,
            recent_items=list(record.recent_items or []), consumed=set(record.consumed or ()),
            history=_history_from(record.history_items, record.history_weights),
            consumed_filter=BloomFilter(record.consumed_filter) if record.consumed_filter else None,
            event_count=int(record.event_count or 0), rating_sum=float(record.rating_sum or 0),
            rating_count=int(record.rating_count or 0),
            applied_events=np.frombuffer(record.applied_events or b"", dtype="<u8").tolist(),
            erased_at=record.erased_at, encoder_version=record.encoder_version, version=record.version)

    def save(self, profile: Profile) -> None:
        """Write if nobody wrote the profile since it was read; raises ConcurrentUpdate otherwise."""
        record = self.record(profile)
        if profile.version is not None:
            record.version = profile.version
        try:
            record.save()
        except PutError as error:
            if conditional_check_failed(error):
                raise ConcurrentUpdate(profile.user_id) from error
            if getattr(error, "cause_response_code", None) == "ValidationException":
                raise Unstorable(f"profile {profile.user_id}: {error.cause_response_message}") from error
            raise
        profile.version = record.version

    def user_ids(self) -> Iterator[str]:
        """Every profiled user: a paginated Scan reading the key and the event count (a
        tombstone, which has none, is no profile)."""
        for record in self.model.scan(attributes_to_get=["user_id", "event_count"]):
            if record.event_count:
                yield record.user_id

    def record(self, profile: Profile) -> Model:
        """The item a profile is written as."""
        newest_first = list(reversed(profile.history))
        return self.model(
            profile.user_id, long_term=vector_bytes(profile.long_term), session=vector_bytes(profile.session),
            session_started_at=profile.session_started_at, last_event_at=profile.last_event_at,
            recent_items=profile.recent_items, consumed=profile.consumed or None,
            history_items=newest_first or None,
            history_weights=np.array([profile.history[i] for i in newest_first], dtype="<f4").tobytes() or None,
            consumed_filter=profile.consumed_filter.to_bytes() if profile.consumed_filter is not None else None,
            event_count=profile.event_count, rating_sum=profile.rating_sum, rating_count=profile.rating_count,
            applied_events=np.array(profile.applied_events, dtype="<u8").tobytes() or None,
            erased_at=profile.erased_at, encoder_version=profile.encoder_version,
            expires_at=int(time.time()) + PROFILE_TTL_SECONDS)

    def erase(self, user_id: str, erased_at: float, keep_seconds: float) -> int:
        """Puts the tombstone over the profile. Its version is the erase time in milliseconds:
        above any count of writes a profile reaches, so no write prepared from a read before
        the erase matches it."""
        response = self.dynamodb.put_item(TableName=self.table, ReturnValues="ALL_OLD", Item={
            "user_id": {"S": user_id}, "erased_at": {"N": repr(float(erased_at))},
            "expires_at": {"N": str(int(erased_at + keep_seconds))},
            "version": {"N": str(int(erased_at * 1000))}})
        return 1 if int(response.get("Attributes", {}).get("event_count", {}).get("N", "0")) else 0


def _history_from(items: list[str] | None, weights: bytes | None) -> dict[str, float]:
    """Stored newest first; held least recent first. A profile stored before the history existed has none."""
    values = np.frombuffer(weights or b"", dtype="<f4").tolist()
    if not items or len(values) != len(items):
        return {}
    return dict(zip(reversed(items), reversed(values), strict=True))


def item_size(item: dict[str, Any]) -> int:
    """The size DynamoDB counts for an item in its wire form ({name: {"S": ...}, ...}): attribute
    names plus values (UTF-8 strings, raw binary, numbers ~1 byte per 2 digits + 1, lists and
    maps 3 bytes + 1 per element, sets their elements)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, content), = value.items()
    if kind == "S":
        return len(content.encode())
    if kind == "N":
        return len(content.strip("-").replace(".", "").lstrip("0")) // 2 + 2
    if kind == "B":
        return len(content) if isinstance(content, bytes) else len(base64.b64decode(content))
    if kind == "SS":
        return sum(len(v.encode()) for v in content)
    if kind == "NS":
        return sum(_value_size({"N": v}) for v in content)
    if kind == "BS":
        return sum(_value_size({"B": v}) for v in content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in content)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in content.items())
    raise ValueError(f"unknown DynamoDB type {kind}")
