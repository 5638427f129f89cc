"""Stage `publish`: put the embedded catalog where the functions read it.

Items (with their vectors) go to the items table through the same repository the
API writes with; the vector snapshot goes to the artifacts bucket, where the API and
events functions load it at cold start. The snapshot's watermark tells them which
later item writes to read from the table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from model_build.catalog import DEFAULT_DATA, DEFAULT_OUT
from model_build.data import read_items
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
    parser.set_defaults(run=lambda args: print(publish_catalog(Settings.from_env(), args.data, args.catalog)) or 0)


def publish_catalog(settings: Settings, data: Path, catalog: Path) -> dict:
    settings.require("items_table", "artifacts_bucket")
    index, meta = ItemIndex.from_npz(Path(catalog).read_bytes())
    model_version = str(meta["model_version"])
    items = read_items(data)
    written_at = time.time()
    count = ItemRepository(settings).put_many(
        ((item, index.vector(item.item_id)) for item in items), model_version, now=written_at)
    # Readers re-read the last CLOCK_SKEW_SECONDS before the watermark; wait that long so
    # the items written above are inside the snapshot, not re-read on every cold start.
    watermark = written_at + CLOCK_SKEW_SECONDS
    time.sleep(max(0.0, watermark - time.time()))
    CatalogSnapshots(settings).publish(index, model_version, watermark)
    return {"items": count, "vectors": len(index), "model_version": model_version}
