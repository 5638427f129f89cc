"""Profiles in DynamoDB (pynamodb), written with optimistic locking (the `version` attribute)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cache

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
from recsys.ports import ConcurrentUpdate
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
        event_count = NumberAttribute(default=0)
        rating_sum = NumberAttribute(default=0)
        rating_count = NumberAttribute(default=0)
        applied_events = BinaryAttribute(null=True, legacy_encoding=False)  # uint64 fingerprints
        expires_at = NumberAttribute(null=True)
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
            event_count=int(record.event_count or 0), rating_sum=float(record.rating_sum or 0),
            rating_count=int(record.rating_count or 0),
            applied_events=np.frombuffer(record.applied_events or b"", dtype="<u8").tolist(),
            version=record.version)

    def save(self, profile: Profile) -> None:
        """Write if nobody wrote the profile since it was read; raises ConcurrentUpdate otherwise."""
        record = self.model(
            profile.user_id, long_term=vector_bytes(profile.long_term), session=vector_bytes(profile.session),
            session_started_at=profile.session_started_at, last_event_at=profile.last_event_at,
            recent_items=profile.recent_items, consumed=profile.consumed or None,
            event_count=profile.event_count, rating_sum=profile.rating_sum, rating_count=profile.rating_count,
            applied_events=np.array(profile.applied_events, dtype="<u8").tobytes() or None,
            expires_at=int(time.time()) + PROFILE_TTL_SECONDS)
        if profile.version is not None:
            record.version = profile.version
        try:
            record.save()
        except PutError as error:
            if conditional_check_failed(error):
                raise ConcurrentUpdate(profile.user_id) from error
            raise
        profile.version = record.version

    def user_ids(self) -> Iterator[str]:
        """Every profiled user: a paginated Scan reading only the key."""
        for record in self.model.scan(attributes_to_get=["user_id"]):
            yield record.user_id

    def delete(self, user_id: str) -> int:
        """Deletes the profile; returns 1 if there was one."""
        response = self.dynamodb.delete_item(TableName=self.table, Key={"user_id": {"S": user_id}},
                                             ReturnValues="ALL_OLD")
        return 1 if response.get("Attributes") else 0

