"""Stage `catalog`: embed every item of a dataset with the final encoder, and count interactions.

Output: one .npz (item ids, unit vectors, interaction counts, model version, and a
fingerprint of its inputs, so a rerun with the same model and data does nothing).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from model_build import paths
from model_build.data import read_interactions, read_items
from model_build.progress import progress
from recsys.encoder import Encoder
from recsys.index import ItemIndex

BATCH = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("catalog", help="embed the catalog with the encoder")
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory")
    parser.add_argument("--model", type=Path, default=paths.ENCODER_MODEL, help="encoder artifact directory")
    parser.add_argument("--out", type=Path, default=paths.CATALOG, help="output .npz")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is current")
    parser.set_defaults(run=lambda args: run(args.data, args.model, args.out, args.force))


def fingerprint(data: Path, model_version: str) -> str:
    digest = hashlib.sha256(f"{model_version}:{ItemIndex.FORMAT}".encode())
    for name in sorted(os.listdir(data)):
        if name.endswith(".csv"):
            digest.update(name.encode())
            digest.update(hashlib.sha256((data / name).read_bytes()).digest())
    return digest.hexdigest()[:32]


def run(data: Path, model: Path, out: Path, force: bool = False) -> int:
    encoder = Encoder(model, threads=os.cpu_count() or 1)
    source = fingerprint(data, encoder.version)
    if out.exists() and not force:
        try:
            _, meta = ItemIndex.from_npz(out.read_bytes())
        except ValueError:  # another format (ArtifactFormatError): rebuild
            meta = {}
        if meta.get("source") == source:
            print(f"catalog: {out} is current ({encoder.version}), nothing to do")
            return 0
    items = read_items(data)
    counts = Counter(i.item_id for i in read_interactions(data) if i.type not in ("hide", "dislike"))
    started = time.perf_counter()
    vectors = np.zeros((len(items), encoder.dim), dtype=np.float32)
    for start in progress(range(0, len(items), BATCH), "catalog: embedding", unit="batch"):
        batch = items[start:start + BATCH]
        vectors[start:start + len(batch)] = encoder.encode([item.text for item in batch])
    seconds = time.perf_counter() - started
    print(f"catalog: {len(items)} items in {seconds:.1f} s ({len(items) / seconds:.0f} items/s)",
          file=sys.stderr)
    index = ItemIndex(encoder.dim, capacity=len(items))
    index.extend([item.item_id for item in items], vectors,
                 np.array([counts[item.item_id] for item in items], dtype=np.float32),
                 [item.categories for item in items])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(index.to_npz(model_version=encoder.version, source=source))
    print(f"catalog: wrote {out}")
    return 0
