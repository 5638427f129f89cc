"""Where profiles, items, events and catalog snapshots live: DynamoDB, Kinesis, S3.

The domain modules never import this one; handlers and jobs wire the two together.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import boto3
import numpy as np
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from recsys.catalog import Item
from recsys.events import Event
from recsys.index import ItemIndex
from recsys.profile import Profile
from recsys.settings import Settings

CATALOG_PARTITION = "items"
SNAPSHOT_KEY = "catalog/item_vectors.npz"
PROFILE_TTL_SECONDS = 400 * 86_400
CONFLICT_RETRIES = 20


class ConcurrentUpdate(Exception):
    """The profile changed between read and write more often than we retry."""


@cache
def aws_client(service: str, region: str, endpoint_url: str | None = None):
    """One client per service and endpoint for the life of the process."""
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url)


def _meta(settings: Settings, table: str) -> type:
    return type("Meta", (), {"table_name": table, "region": settings.region, "host": settings.endpoint_url})


@cache
def profile_model(settings: Settings) -> type[Model]:
    class ProfileRecord(Model):
        Meta = _meta(settings, settings.profiles_table)
        user_id = UnicodeAttribute(hash_key=True)
        long_term = BinaryAttribute(null=True, legacy_encoding=False)
        session = BinaryAttribute(null=True, legacy_encoding=False)
        session_started_at = NumberAttribute(null=True)
        last_event_at = NumberAttribute(null=True)
        recent_items = ListAttribute(of=UnicodeAttribute, default=list)
        consumed = UnicodeSetAttribute(null=True)
        event_count = NumberAttribute(default=0)
        expires_at = NumberAttribute(null=True)
        version = VersionAttribute()

    return ProfileRecord


class ByUpdate(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_update"
        projection = AllProjection()

    catalog = UnicodeAttribute(hash_key=True)
    updated_at = NumberAttribute(range_key=True)


@cache
def item_model(settings: Settings) -> type[Model]:
    class ItemRecord(Model):
        Meta = _meta(settings, settings.items_table)
        item_id = UnicodeAttribute(hash_key=True)
        title = UnicodeAttribute()
        description = UnicodeAttribute(default="")
        categories = ListAttribute(of=UnicodeAttribute, default=list)
        tags = ListAttribute(of=UnicodeAttribute, default=list)
        attributes = MapAttribute(default=dict)
        text_hash = UnicodeAttribute()
        vector = BinaryAttribute(null=True, legacy_encoding=False)
        vector_text_hash = UnicodeAttribute(null=True)
        model_version = UnicodeAttribute(null=True)
        # Set only on items written after the last published snapshot, so the by_update
        # index is sparse: it holds what a warm function has to read besides the snapshot.
        catalog = UnicodeAttribute(null=True)
        updated_at = NumberAttribute()
        by_update = ByUpdate()

    return ItemRecord


def _vector(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.float32).copy()


def _bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


class ProfileRepository:
    def __init__(self, settings: Settings) -> None:
        self.model = profile_model(settings)

    def get(self, user_id: str) -> Profile | None:
        try:
            record = self.model.get(user_id, consistent_read=True)
        except self.model.DoesNotExist:
            return None
        return Profile(
            user_id=record.user_id, long_term=_vector(record.long_term), session=_vector(record.session),
            session_started_at=record.session_started_at, last_event_at=record.last_event_at,
            recent_items=list(record.recent_items or []), consumed=set(record.consumed or ()),
            event_count=int(record.event_count or 0), version=record.version)

    def save(self, profile: Profile) -> None:
        """Write with optimistic locking: raises ConcurrentUpdate if someone wrote in between."""
        record = self.model(
            profile.user_id, long_term=_bytes(profile.long_term), session=_bytes(profile.session),
            session_started_at=profile.session_started_at, last_event_at=profile.last_event_at,
            recent_items=profile.recent_items, consumed=profile.consumed or None,
            event_count=profile.event_count, expires_at=int(time.time()) + PROFILE_TTL_SECONDS)
        if profile.version is not None:
            record.version = profile.version
        try:
            record.save()
        except PutError as error:
            if _conditional_check_failed(error):
                raise ConcurrentUpdate(profile.user_id) from error
            raise
        profile.version = record.version

    def update(self, user_id: str, change) -> Profile:
        """Read, change, write; on a concurrent write re-read and change again."""
        for attempt in range(CONFLICT_RETRIES):
            profile = self.get(user_id) or Profile(user_id=user_id)
            change(profile)
            try:
                self.save(profile)
                return profile
            except ConcurrentUpdate:
                time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
        raise ConcurrentUpdate(f"profile {user_id}: {CONFLICT_RETRIES} concurrent writes in a row")


def _conditional_check_failed(error: PutError | UpdateError) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


class ItemRepository:
    def __init__(self, settings: Settings) -> None:
        self.model = item_model(settings)

    def get(self, item_id: str) -> Item | None:
        try:
            return self._item(self.model.get(item_id))
        except self.model.DoesNotExist:
            return None

    def put(self, item: Item, vector: np.ndarray | None = None, model_version: str | None = None,
            now: float | None = None) -> None:
        self._record(item, vector, model_version, now or time.time(), in_snapshot=False).save()

    def put_many(self, items: Iterable[tuple[Item, np.ndarray | None]], model_version: str | None,
                 now: float) -> int:
        """Writes the items of a published snapshot (they stay out of the by_update index)."""
        count = 0
        with self.model.batch_write() as batch:
            for item, vector in items:
                batch.save(self._record(item, vector, model_version, now, in_snapshot=True))
                count += 1
        return count

    def set_vector(self, item_id: str, text_hash: str, vector: np.ndarray, model_version: str) -> bool:
        """Store the vector of the text with this hash; False if the item's text changed since."""
        record = self.model(item_id)
        try:
            record.update(
                actions=[self.model.vector.set(_bytes(vector)),
                         self.model.vector_text_hash.set(text_hash),
                         self.model.model_version.set(model_version),
                         self.model.catalog.set(CATALOG_PARTITION),
                         self.model.updated_at.set(time.time())],
                condition=self.model.text_hash == text_hash)
        except UpdateError as error:
            if _conditional_check_failed(error):
                return False
            raise
        return True

    def changed_since(self, updated_after: float) -> Iterator[tuple[str, np.ndarray | None, float]]:
        """(item_id, vector, updated_at) of items written after a time, oldest first."""
        for record in self.model.by_update.query(
                CATALOG_PARTITION, self.model.updated_at > updated_after,
                attributes_to_get=["item_id", "vector", "updated_at"]):
            yield record.item_id, _vector(record.vector), float(record.updated_at)

    def _record(self, item: Item, vector: np.ndarray | None, model_version: str | None, now: float,
                in_snapshot: bool):
        return self.model(
            item.item_id, title=item.title, description=item.description, categories=item.categories,
            tags=item.tags, attributes=item.attributes, text_hash=item.text_hash,
            vector=_bytes(vector), vector_text_hash=item.text_hash if vector is not None else None,
            model_version=model_version if vector is not None else None,
            catalog=None if in_snapshot else CATALOG_PARTITION, updated_at=now)

    @staticmethod
    def _item(record: Any) -> Item:
        return Item(item_id=record.item_id, title=record.title, description=record.description or "",
                    categories=list(record.categories or []), tags=list(record.tags or []),
                    attributes=record.attributes.as_dict() if record.attributes else {})


class EventStream:
    """Puts events on Kinesis, partitioned by user so each user's events stay in order."""

    def __init__(self, settings: Settings) -> None:
        self.stream = settings.events_stream
        self.kinesis = aws_client("kinesis", settings.region, settings.endpoint_url)

    def put(self, events: list[Event], attempts: int = 3) -> list[Event]:
        """Returns the events Kinesis would not take after retries (throttling)."""
        pending = events
        for _ in range(attempts):
            failed: list[Event] = []
            for start in range(0, len(pending), 500):
                chunk = pending[start:start + 500]
                response = self.kinesis.put_records(StreamName=self.stream, Records=[
                    {"Data": json.dumps(e.to_json()).encode(), "PartitionKey": e.user_id} for e in chunk])
                if response.get("FailedRecordCount"):
                    failed += [e for e, r in zip(chunk, response["Records"], strict=True) if "ErrorCode" in r]
            if not failed:
                return []
            pending = failed
            time.sleep(0.1)
        return pending


class CatalogSnapshots:
    """The item-vector snapshot the build job publishes to S3; functions load it at cold start."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    def load(self) -> tuple[ItemIndex, dict] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=SNAPSHOT_KEY)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return ItemIndex.from_npz(body)

    def publish(self, index: ItemIndex, model_version: str, updated_at: float) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=SNAPSHOT_KEY,
                           Body=index.to_npz(model_version=model_version, updated_at=updated_at))
