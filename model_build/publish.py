"""Stage `publish`: put the embedded catalog where the functions read it.

The vector snapshot goes to the artifacts bucket, where the API and events functions
load it at cold start; its watermark tells them which later item writes to read from
the items table. Then the items (with their vectors) go to the items table through
the same repository the API writes with. The collaborative model (with its blend
weights) goes to the bucket too; a warm function loads it at its next cold start.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from model_build.catalog import DEFAULT_DATA, DEFAULT_OUT
from model_build.collaborative import DEFAULT_OUT as DEFAULT_COLLABORATIVE
from model_build.data import read_items
from recsys.catalog import Item
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.live import CLOCK_SKEW_SECONDS
from recsys.settings import Settings
from recsys.storage import CatalogSnapshots, ItemRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish", help="write the embedded catalog to the items table and the artifacts bucket",
        description="Reads ITEMS_TABLE, ARTIFACTS_BUCKET, AWS_REGION (and AWS_ENDPOINT_URL) from the environment.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset directory")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_OUT, help="output of the catalog stage")
    parser.add_argument("--collaborative", type=Path, default=DEFAULT_COLLABORATIVE,
                        help="output of the collaborative stage")
    parser.set_defaults(run=lambda args: print(publish_catalog(
        Settings.from_env(), args.data, args.catalog, args.collaborative)) or 0)


def publish_catalog(settings: Settings, data: Path, catalog: Path, collaborative: Path) -> dict:
    """Models and snapshot first, then the items: functions that start meanwhile already see
    every vector."""
    settings.require("items_table", "artifacts_bucket")
    written_at = time.time()
    publish_collaborative(settings, collaborative)
    index, model_version = publish_snapshot(settings, catalog, written_at, read_items(data))
    count = write_items(settings, data, index, model_version, written_at)
    return {"items": count, "vectors": len(index), "model_version": model_version}


def publish_collaborative(settings: Settings, collaborative: Path) -> None:
    """Checked before it leaves: a file the functions could not read is not published."""
    data = Path(collaborative).read_bytes()
    CollaborativeModel.from_npz(data)
    CatalogSnapshots(settings).publish_collaborative(data)


def publish_snapshot(settings: Settings, catalog: Path, written_at: float,
                     items: list[Item] | None = None) -> tuple[ItemIndex, str]:
    """Readers re-read items written after (watermark - CLOCK_SKEW_SECONDS); the items of this
    catalog, stamped `written_at`, are in the snapshot and are not read again at cold start.
    `items` (the catalog's items) bring their attributes into the snapshot, for filtering."""
    index, meta = ItemIndex.from_npz(Path(catalog).read_bytes())
    for item in items or ():
        if item.item_id in index.rows:
            index.attributes[index.rows[item.item_id]] = dict(item.attributes)
    model_version = str(meta["model_version"])
    CatalogSnapshots(settings).publish(index, model_version, written_at + CLOCK_SKEW_SECONDS)
    return index, model_version


def write_items(settings: Settings, data: Path, index: ItemIndex, model_version: str, written_at: float) -> int:
    """Upserts every item with its vector, through the repository the API writes with."""
    return ItemRepository(settings).put_many(
        ((item, index.vector(item.item_id)) for item in read_items(data)), model_version, now=written_at)
