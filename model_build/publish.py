"""Stage `publish`: one versioned release of what the functions serve, then the items.

A release (see recsys/release.py) holds the item vectors with their ids, the
collaborative model with its blend weights, and the encoder (model.onnx,
tokenizer.json, its manifest as encoder.json), plus manifest.json: sha256 and size of
every file, dimensions, the evaluation metrics when a report is given, and source
versions. It is written to a directory (build/releases/<version>/) and to the
artifacts bucket (releases/<version>/); the pointer releases/current.json moves last,
and warm functions follow it within a minute. Then the CSV sources' items go to the items
table through the repository the API writes with. Items of the live catalog's export
(`items.jsonl`, `python -m ops export-items`) are in the release and already in the table:
they are not written back (a newer write made while the release was built would be lost),
and the release's snapshot time is the export's (`--snapshot-at`), so warm functions read
again every item written since the export began.
Items retired in the items table (deleted, or set unavailable: Items.retired) are left
out of the release and not written back.

Resource names come from the environment (ITEMS_TABLE, ARTIFACTS_BUCKET, AWS_REGION,
AWS_ENDPOINT_URL), from a deployed stack's outputs (--stack NAME) or from the running
local stack (--local).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from model_build import paths
from model_build.data import item_sources, read_items
from ops.environment import environment
from recsys.adapters.artifacts import S3Releases
from recsys.adapters.items import ItemRepository
from recsys.catalog import Item
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.live import CLOCK_SKEW_SECONDS
from recsys.release import COLLABORATIVE, ITEM_VECTORS, ReleaseError, build_manifest
from recsys.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish", help="publish a versioned release and write the items to the items table",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory (its items)")
    parser.add_argument("--catalog", type=Path, default=paths.CATALOG, help="output of the catalog stage")
    parser.add_argument("--collaborative", type=Path, default=paths.COLLABORATIVE,
                        help="output of the collaborative stage")
    parser.add_argument("--model", type=Path, default=paths.ENCODER_MODEL, help="encoder artifact directory")
    parser.add_argument("--report", type=Path, default=None, help="an eval report (<out>.report.json) to record")
    parser.add_argument("--releases", type=Path, default=paths.RELEASES, help="local directory of releases")
    parser.add_argument("--snapshot-at", type=float, default=None,
                        help="when the items were read (epoch seconds; `ops export-items` prints it): "
                             "items written after are read again by the functions (default: now)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="find the bucket and table from this CloudFormation stack's outputs")
    where.add_argument("--local", action="store_true", help="the stack `make run` started")
    parser.set_defaults(run=lambda args: run(args.data, args.catalog, args.collaborative, args.model, args.report,
                                             args.releases, args.local, args.stack, args.snapshot_at))


def run(data: Path = paths.DATA, catalog: Path = paths.CATALOG, collaborative: Path = paths.COLLABORATIVE,
        model: Path = paths.ENCODER_MODEL, report: Path | None = None, releases: Path = paths.RELEASES,
        local: bool = False, stack: str | None = None, snapshot_at: float | None = None) -> int:
    """The stage: publish to the resources the environment, a deployed `stack`'s outputs or the
    `local` stack name; prints what was published as JSON."""
    print(json.dumps(publish(Settings.from_env(environment(local, stack)), data, catalog, collaborative, model,
                             report, releases, snapshot_at)))
    return 0


def publish(settings: Settings, data: Path, catalog: Path, collaborative: Path, model: Path,
            report: Path | None = None, releases: Path = paths.RELEASES,
            snapshot_at: float | None = None) -> dict[str, Any]:
    settings.require("items_table", "artifacts_bucket")
    written_at = time.time()
    metrics = json.loads(report.read_text()) if report else None
    # Read after written_at: an item retired later is read again by warm functions (the
    # release's snapshot time is written_at + CLOCK_SKEW_SECONDS, re-read from written_at).
    retired = ItemRepository(settings).retired()
    version, index, model_version = publish_release(settings, data, catalog, collaborative, model, written_at,
                                                    metrics, releases, snapshot_at, retired)
    count = write_items(settings, data, index, model_version, written_at, retired)
    return {"release": version, "items": count, "vectors": len(index), "model_version": model_version}


def publish_release(settings: Settings, data: Path, catalog: Path, collaborative: Path, model: Path,
                    written_at: float, metrics: dict[str, Any] | None = None,
                    releases: Path | None = None, snapshot_at: float | None = None,
                    retired: Iterable[str] = ()) -> tuple[str, ItemIndex, str]:
    """Builds the release, keeps a copy under `releases` (when given), publishes it to the
    bucket and moves the pointer; returns its version, item index and encoder version."""
    version, files, manifest = build_release(catalog, collaborative, model, written_at, metrics, read_items(data),
                                             snapshot_at, retired)
    if releases is not None:
        save_release(releases, version, files, manifest)
    S3Releases(settings).publish(version, files, manifest)
    index, _ = ItemIndex.from_npz(files[ITEM_VECTORS])
    return version, index, manifest["model_version"]


def build_release(catalog: Path, collaborative: Path, model: Path, written_at: float,
                  metrics: dict[str, Any] | None = None, items: Iterable[Item] = (),
                  snapshot_at: float | None = None, retired: Iterable[str] = ()
                  ) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """The release's files and manifest. Readers re-read items written after
    (snapshot time - CLOCK_SKEW_SECONDS). Without `snapshot_at` the snapshot is this
    catalog's items, stamped `written_at`, which are not read again at cold start; with it
    (the live catalog's export time) every item written since the export is. `items`
    (the catalog's) bring their attributes into the snapshot, for filtering; `retired` ids
    are left out of its item vectors (the collaborative model keeps them: their evidence
    still scores the items chosen with them, and it lists only what the index holds)."""
    index, catalog_meta = ItemIndex.from_npz(Path(catalog).read_bytes())
    index = without(index, set(retired))
    for item in items:
        if item.item_id in index.rows:
            index.attributes[index.rows[item.item_id]] = dict(item.attributes)
    collaborative_bytes = Path(collaborative).read_bytes()
    _, collaborative_meta = CollaborativeModel.from_npz(collaborative_bytes)
    fitted_on = collaborative_meta.get("item_vectors")
    if fitted_on is not None and str(fitted_on) != str(catalog_meta.get("source")):
        raise ReleaseError(f"{collaborative}: its new-item maps were fitted on item vectors {fitted_on}, "
                           f"{catalog} holds {catalog_meta.get('source')}: rerun the collaborative stage "
                           f"with --catalog {catalog}")
    files = {
        ITEM_VECTORS: index.to_npz(model_version=str(catalog_meta["model_version"]),
                                   updated_at=written_at + CLOCK_SKEW_SECONDS if snapshot_at is None
                                   else snapshot_at),
        COLLABORATIVE: collaborative_bytes,
        "model.onnx": (model / "model.onnx").read_bytes(),
        "tokenizer.json": (model / "tokenizer.json").read_bytes(),
        "encoder.json": (model / "manifest.json").read_bytes(),
    }
    digest = hashlib.sha256(b"".join(hashlib.sha256(files[n]).digest() for n in sorted(files))).hexdigest()
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(written_at)) + "-" + digest[:8]
    encoder = json.loads(files["encoder.json"])
    sources = {"catalog_data": catalog_meta.get("source"), "collaborative_data": collaborative_meta.get("source"),
               "encoder_weights": encoder.get("source_weights"), "packages": encoder.get("versions")}
    return version, files, build_manifest(version, files, written_at, metrics, sources)


def save_release(releases: Path, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> Path:
    directory = releases / version
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def without(index: ItemIndex, item_ids: set[str]) -> ItemIndex:
    """The index less some items (the index itself when it holds none of them)."""
    kept = [row for row, item_id in enumerate(index.ids) if item_id not in item_ids]
    if len(kept) == len(index):
        return index
    smaller = ItemIndex(index.dim, capacity=max(1024, len(kept)))
    smaller.extend([index.ids[r] for r in kept], index.vectors[kept], index.counts[kept],
                   [index.categories[r] for r in kept], [index.attributes[r] for r in kept])
    return smaller


def write_items(settings: Settings, data: Path, index: ItemIndex, model_version: str, written_at: float,
                retired: Iterable[str] = ()) -> int:
    """Upserts the CSV sources' items with their vectors, through the repository the API
    writes with; items of the live catalog's export are already in the table, and a retired
    item is not written (that would bring it back)."""
    from_csv, exported = item_sources(data)
    skip = {item.item_id for item in exported} | set(retired)
    return ItemRepository(settings).put_many(
        ((item, index.vector(item.item_id)) for item in from_csv if item.item_id not in skip), model_version,
        now=written_at)
