"""Items in DynamoDB (pynamodb); the sparse `by_update` index holds what was written after
the published snapshot, which is what a warm function reads besides the snapshot.

A deleted item stays as a tombstone (`available` false, `deleted_at` set, in by_update) so
that warm functions read its retirement like any other change, and a build job can leave
it out of the next release; a put overwrites the tombstone and brings the item back."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import numpy as np
from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from recsys.adapters.aws import conditional_check_failed, table_meta, vector_bytes, vector_from
from recsys.catalog import Item
from recsys.ports import ChangedItem
from recsys.settings import Settings

CATALOG_PARTITION = "items"


class ByUpdate(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_update"
        projection = AllProjection()

    catalog = UnicodeAttribute(hash_key=True)
    updated_at = NumberAttribute(range_key=True)


@cache
def item_model(settings: Settings) -> type[Model]:
    class ItemRecord(Model):
        Meta = table_meta(settings, settings.items_table)
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
        available = BooleanAttribute(null=True)  # absent on items written before retirement existed: available
        deleted_at = NumberAttribute(null=True)
        # Set only on items written after the last published snapshot, so the by_update
        # index is sparse: it holds what a warm function has to read besides the snapshot.
        catalog = UnicodeAttribute(null=True)
        updated_at = NumberAttribute()
        by_update = ByUpdate()

    return ItemRecord



class ItemRepository:
    def __init__(self, settings: Settings) -> None:
        self.model = item_model(settings)

    def get(self, item_id: str) -> Item | None:
        try:
            record = self.model.get(item_id)
        except self.model.DoesNotExist:
            return None
        return None if record.deleted_at is not None else self._item(record)

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
                actions=[self.model.vector.set(vector_bytes(vector)),
                         self.model.vector_text_hash.set(text_hash),
                         self.model.model_version.set(model_version),
                         self.model.catalog.set(CATALOG_PARTITION),
                         self.model.updated_at.set(time.time())],
                condition=self.model.text_hash == text_hash)
        except UpdateError as error:
            if conditional_check_failed(error):
                return False
            raise
        return True

    def delete(self, item_id: str, now: float | None = None) -> bool:
        """The tombstone: unavailable, deleted, in the by_update index; its vector stays (a
        function that reads it keeps the row, masked, like any retired item)."""
        now = now or time.time()
        try:
            self.model(item_id).update(
                actions=[self.model.available.set(False), self.model.deleted_at.set(now),
                         self.model.catalog.set(CATALOG_PARTITION), self.model.updated_at.set(now)],
                condition=self.model.item_id.exists())
        except UpdateError as error:
            if conditional_check_failed(error):
                return False
            raise
        return True

    def retired(self) -> set[str]:
        """A scan (the build job's, not a request's): items deleted or set unavailable."""
        return {record.item_id for record in self.model.scan(self.model.available.is_in(False),
                                                             attributes_to_get=["item_id"])}

    def changed_since(self, updated_after: float) -> Iterator[ChangedItem]:
        """Items written after a time (and not in the published snapshot), oldest first."""
        for record in self.model.by_update.query(
                CATALOG_PARTITION, self.model.updated_at > updated_after,
                attributes_to_get=["item_id", "vector", "categories", "updated_at", "attributes", "available"]):
            yield ChangedItem(record.item_id, vector_from(record.vector), tuple(record.categories or ()),
                              float(record.updated_at),
                              record.attributes.as_dict() if record.attributes else {},
                              available=record.available is not False)

    def all(self) -> Iterator[Item]:
        """Every item, unavailable ones too, deleted ones not: a paginated Scan (the vectors
        are not read)."""
        for record in self.model.scan(attributes_to_get=["item_id", "title", "description", "categories", "tags",
                                                         "attributes", "available", "deleted_at"]):
            if record.deleted_at is None:
                yield self._item(record)

    def _record(self, item: Item, vector: np.ndarray | None, model_version: str | None, now: float,
                in_snapshot: bool):
        return self.model(
            item.item_id, title=item.title, description=item.description, categories=item.categories,
            tags=item.tags, attributes=item.attributes, text_hash=item.text_hash,
            # A published item's vector lives in the snapshot; the table only records that
            # its text is encoded, so the catalog function leaves it alone.
            vector=None if in_snapshot else vector_bytes(vector),
            vector_text_hash=item.text_hash if vector is not None else None,
            model_version=model_version if vector is not None else None,
            catalog=None if in_snapshot else CATALOG_PARTITION, updated_at=now, available=item.available)

    @staticmethod
    def _item(record: Any) -> Item:
        return Item(item_id=record.item_id, title=record.title, description=record.description or "",
                    categories=list(record.categories or []), tags=list(record.tags or []),
                    attributes=record.attributes.as_dict() if record.attributes else {},
                    available=record.available is not False)

