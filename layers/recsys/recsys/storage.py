"""Where profiles, items, events and catalog snapshots live: DynamoDB, Kinesis, S3.

The domain modules never import this one; handlers and jobs wire the two together.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
import numpy as np
from botocore.exceptions import ClientError
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
from recsys.popularity import PopularityCounters
from recsys.profile import Profile
from recsys.settings import Settings

CATALOG_PARTITION = "items"
RELEASES_PREFIX = "releases/"
RELEASE_POINTER_KEY = "releases/current.json"
POPULARITY_PREFIX = "popularity/"
PROFILE_TTL_SECONDS = 400 * 86_400
CONFLICT_RETRIES = 20
SHARD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
T = TypeVar("T")


class ConcurrentUpdate(Exception):
    """What was read (a profile, a shard's popularity counters) changed before the write."""


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
        rating_sum = NumberAttribute(default=0)
        rating_count = NumberAttribute(default=0)
        applied_events = BinaryAttribute(null=True, legacy_encoding=False)  # uint64 fingerprints
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
            user_id=record.user_id, long_term=_vector(record.long_term), session=_vector(record.session),
            session_started_at=record.session_started_at, last_event_at=record.last_event_at,
            recent_items=list(record.recent_items or []), consumed=set(record.consumed or ()),
            event_count=int(record.event_count or 0), rating_sum=float(record.rating_sum or 0),
            rating_count=int(record.rating_count or 0),
            applied_events=np.frombuffer(record.applied_events or b"", dtype="<u8").tolist(),
            version=record.version)

    def save(self, profile: Profile) -> None:
        """Write if nobody wrote the profile since it was read; raises ConcurrentUpdate otherwise."""
        record = self.model(
            profile.user_id, long_term=_bytes(profile.long_term), session=_bytes(profile.session),
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
            if _conditional_check_failed(error):
                raise ConcurrentUpdate(profile.user_id) from error
            raise
        profile.version = record.version

    def delete(self, user_id: str) -> int:
        """Deletes the profile; returns 1 if there was one."""
        response = self.dynamodb.delete_item(TableName=self.table, Key={"user_id": {"S": user_id}},
                                             ReturnValues="ALL_OLD")
        return 1 if response.get("Attributes") else 0

    def update(self, user_id: str, change: Callable[[Profile], T | None],
               current: Profile | None = None) -> T | None:
        """Read, change, write; on a concurrent write re-read and change again.

        `change` returns what it did, or None when it left the profile as it was (then
        nothing is written); `update` returns what the write that succeeded did.
        `current`, a profile the caller has just read, saves the first read.
        """
        for attempt in range(CONFLICT_RETRIES):
            profile = current if attempt == 0 and current is not None else \
                self.get(user_id) or Profile(user_id=user_id)
            done = change(profile)
            if done is None:
                return None
            try:
                self.save(profile)
                return done
            except ConcurrentUpdate:
                time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
        raise ConcurrentUpdate(f"profile {user_id}: {CONFLICT_RETRIES} concurrent writes in a row")


def _conditional_check_failed(error: PutError | UpdateError) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class ChangedItem:
    item_id: str
    vector: np.ndarray | None
    categories: tuple[str, ...]
    updated_at: float
    attributes: dict[str, Any] | None = None


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
        """Writes the items of a published snapshot: out of the by_update index, and without
        their vectors, which the snapshot holds."""
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

    def changed_since(self, updated_after: float) -> Iterator[ChangedItem]:
        """Items written after a time (and not in the published snapshot), oldest first."""
        for record in self.model.by_update.query(
                CATALOG_PARTITION, self.model.updated_at > updated_after,
                attributes_to_get=["item_id", "vector", "categories", "updated_at", "attributes"]):
            yield ChangedItem(record.item_id, _vector(record.vector), tuple(record.categories or ()),
                              float(record.updated_at),
                              record.attributes.as_dict() if record.attributes else {})

    def _record(self, item: Item, vector: np.ndarray | None, model_version: str | None, now: float,
                in_snapshot: bool):
        return self.model(
            item.item_id, title=item.title, description=item.description, categories=item.categories,
            tags=item.tags, attributes=item.attributes, text_hash=item.text_hash,
            # A published item's vector lives in the snapshot; the table only records that
            # its text is encoded, so the catalog function leaves it alone.
            vector=None if in_snapshot else _bytes(vector),
            vector_text_hash=item.text_hash if vector is not None else None,
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


class Releases:
    """Versioned releases in the artifacts bucket: `releases/<version>/<file>`, each with its
    `manifest.json`, and `releases/current.json` naming the version to serve."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    def current(self) -> str | None:
        """The version the pointer names, or None before the first release."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=RELEASE_POINTER_KEY)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        try:
            return str(json.loads(body)["version"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"s3://{self.bucket}/{RELEASE_POINTER_KEY} is not {{\"version\": ...}}: {error}") from None

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads(self.read(version, "manifest.json"))

    def read(self, version: str, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/{name}")["Body"].read()

    def publish(self, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        """Files, then the manifest, then the pointer: a reader never sees a partial release."""
        for name, data in files.items():
            self.s3.put_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/{name}", Body=data)
        self.s3.put_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/manifest.json",
                           Body=json.dumps(manifest, indent=2).encode())
        self.point_to(version)

    def point_to(self, version: str) -> None:
        """Serve `version` (a rollback is pointing back to an earlier one)."""
        self.s3.put_object(Bucket=self.bucket, Key=RELEASE_POINTER_KEY, Body=json.dumps({"version": version}).encode())


class PopularityStore:
    """Each stream shard's popularity counters: one object per shard
    (`popularity/<shard id>.npz`), replaced whole once per batch. The put is conditional
    on the ETag the writer read (or on there being no object yet), so if two writers
    ever hold one shard, the second to write fails with ConcurrentUpdate instead of
    overwriting the first."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    @staticmethod
    def key(shard_id: str) -> str:
        if not SHARD_ID.fullmatch(shard_id):
            raise ValueError(f"not a shard id: {shard_id!r}")
        return f"{POPULARITY_PREFIX}{shard_id}.npz"

    def load(self, shard_id: str) -> tuple[PopularityCounters, str] | None:
        """The shard's counters and their ETag, or None before its first write."""
        try:
            return self.get(self.key(shard_id))
        except self.s3.exceptions.NoSuchKey:
            return None

    def save(self, shard_id: str, counters: PopularityCounters, etag: str | None) -> str:
        """Replace the counters read with `etag` (None: there were none); returns the new ETag."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(Bucket=self.bucket, Key=self.key(shard_id), Body=counters.to_npz(),
                                          **condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ConcurrentUpdate(f"popularity counters of {shard_id} changed since read") from error
            raise
        return response["ETag"]

    def etags(self) -> dict[str, str]:
        """Object key -> ETag of every shard's counters (one list request per 1,000 shards)."""
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=POPULARITY_PREFIX):
            found.update((o["Key"], o["ETag"]) for o in page.get("Contents", []) if o["Key"].endswith(".npz"))
        return found

    def get(self, key: str) -> tuple[PopularityCounters, str]:
        response = self.s3.get_object(Bucket=self.bucket, Key=key)
        return PopularityCounters.from_npz(response["Body"].read()), response["ETag"]


class RawEventLog:
    """Every applied event, kept in S3 as the build job's training data, one object per
    user and batch (`events/user=<quoted id>/<first timestamp>-<digest>.jsonl`), so a
    user's events can be listed and erased by prefix. Objects are named by their
    content: writing the same events again rewrites the same object."""

    prefix = "events/"

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.raw_events_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    def _user_prefix(self, user_id: str) -> str:
        return f"{self.prefix}user={quote(user_id, safe='')}/"

    def put(self, user_id: str, events: list[Event]) -> None:
        if not events:
            return
        body = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in events).encode()
        key = f"{self._user_prefix(user_id)}{int(min(e.timestamp for e in events)):011d}-" \
              f"{hashlib.sha256(body).hexdigest()[:16]}.jsonl"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def keys(self, user_id: str | None = None) -> Iterator[str]:
        prefix = self._user_prefix(user_id) if user_id is not None else self.prefix
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from (o["Key"] for o in page.get("Contents", []))

    def events(self, user_id: str | None = None) -> Iterator[Event]:
        for key in self.keys(user_id):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
            yield from (Event(**json.loads(line)) for line in body.splitlines() if line)

    def erase(self, user_id: str) -> int:
        """Deletes every object of the user; returns how many."""
        keys = list(self.keys(user_id))
        for start in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        return len(keys)


@dataclass(frozen=True)
class Impression:
    """A served list: who saw which items (in order), in which variant, from which model."""
    recommendation_id: str
    user_id: str
    variant: str
    model_version: str
    items: list[str]
    created_at: float
    explored: list[str] | None = None

    @property
    def day(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.created_at))


class ImpressionStore:
    """Impressions in DynamoDB by recommendation_id (TTL `expires_at`); the by_user index
    (keys only) finds a user's impressions to erase them."""

    def __init__(self, settings: Settings) -> None:
        self.table = settings.impressions_table
        self.retention = settings.impression_retention_days * 86_400
        self.dynamodb = aws_client("dynamodb", settings.region, settings.endpoint_url)

    def put(self, impression: Impression) -> None:
        item = {"recommendation_id": {"S": impression.recommendation_id}, "user_id": {"S": impression.user_id},
                "variant": {"S": impression.variant}, "model_version": {"S": impression.model_version},
                "created_at": {"N": repr(impression.created_at)},
                "items": {"L": [{"S": i} for i in impression.items]},
                "expires_at": {"N": str(int(impression.created_at + self.retention))}}
        if impression.explored:
            item["explored"] = {"L": [{"S": i} for i in impression.explored]}
        self.dynamodb.put_item(TableName=self.table, Item=item)

    def get(self, recommendation_id: str) -> Impression | None:
        found = self.dynamodb.get_item(TableName=self.table, Key={"recommendation_id": {"S": recommendation_id}})
        item = found.get("Item")
        if item is None:
            return None
        return Impression(item["recommendation_id"]["S"], item["user_id"]["S"], item["variant"]["S"],
                          item["model_version"]["S"], [i["S"] for i in item["items"]["L"]],
                          float(item["created_at"]["N"]), [i["S"] for i in item.get("explored", {}).get("L", [])])

    def ids_of(self, user_id: str) -> list[str]:
        ids = []
        for page in self.dynamodb.get_paginator("query").paginate(
                TableName=self.table, IndexName="by_user", KeyConditionExpression="user_id = :u",
                ExpressionAttributeValues={":u": {"S": user_id}}):
            ids += [item["recommendation_id"]["S"] for item in page["Items"]]
        return ids

    def erase(self, user_id: str) -> int:
        """Deletes every impression of the user; returns how many."""
        ids = self.ids_of(user_id)
        for start in range(0, len(ids), 25):
            requests = [{"DeleteRequest": {"Key": {"recommendation_id": {"S": i}}}} for i in ids[start:start + 25]]
            while requests:
                unprocessed = self.dynamodb.batch_write_item(RequestItems={self.table: requests})
                requests = unprocessed.get("UnprocessedItems", {}).get(self.table, [])
        return len(ids)


METRIC_COUNTERS = ("impressions", "clicks", "conversions")


class MetricsStore:
    """Online metrics: one item per (variant, day) whose counters are only ever added to."""

    def __init__(self, settings: Settings) -> None:
        self.table = settings.metrics_table
        self.dynamodb = aws_client("dynamodb", settings.region, settings.endpoint_url)

    def add(self, variant: str, day: str, **counts: int) -> None:
        counts = {name: n for name, n in counts.items() if n}
        if set(counts) - set(METRIC_COUNTERS):
            raise ValueError(f"unknown counters {sorted(set(counts) - set(METRIC_COUNTERS))}")
        if not counts:
            return
        self.dynamodb.update_item(
            TableName=self.table, Key={"variant": {"S": variant}, "day": {"S": day}},
            UpdateExpression="ADD " + ", ".join(f"#{name} :{name}" for name in counts),
            ExpressionAttributeNames={f"#{name}": name for name in counts},
            ExpressionAttributeValues={f":{name}": {"N": str(n)} for name, n in counts.items()})

    def read(self, first_day: str, last_day: str, variant: str | None = None) -> list[dict[str, Any]]:
        """Counters per (variant, day) within the days, by variant then day. Without a
        variant the table is scanned: it holds one small item per variant and day."""
        values = {":a": {"S": first_day}, ":b": {"S": last_day}}
        if variant is not None:
            pages = self.dynamodb.get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="variant = :v AND #d BETWEEN :a AND :b",
                ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={**values, ":v": {"S": variant}})
        else:
            pages = self.dynamodb.get_paginator("scan").paginate(
                TableName=self.table, FilterExpression="#d BETWEEN :a AND :b",
                ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues=values)
        rows = [{"variant": item["variant"]["S"], "day": item["day"]["S"],
                 **{name: int(item.get(name, {}).get("N", "0")) for name in METRIC_COUNTERS}}
                for page in pages for item in page["Items"]]
        return sorted(rows, key=lambda r: (r["variant"], r["day"]))


class DeadLetterQueue:
    """Where a record that can never be applied goes, with the reason, to be fixed and redriven."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.events_dead_letter_queue
        self.sqs = aws_client("sqs", settings.region, settings.endpoint_url)

    def send(self, record_id: str, payload: bytes, reason: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps({
            "condition": "InvalidRecord", "reason": reason, "sequenceNumber": record_id,
            "data": base64.b64encode(payload).decode()}))
