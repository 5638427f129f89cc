"""Stage `collaborative`: train the item-item (EASE), sequence and matrix-factorisation (ALS)
models, and the maps that predict them for a new item from its vector.

What recsys/collaborative.py scores is written as one .npz; see there for the models,
and model_build/collaborative_training.py for their training. The item vectors come from
the catalog stage's .npz (the maps are fitted in their space). The blend weights fitted
with --fit on a validation carve of this data (model_build/blend.py) travel in the same
file; without --fit, the functions use the defaults (recsys.scoring.BlendWeights).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from model_build import blend, paths
from model_build.catalog import fingerprint
from model_build.collaborative_training import TRAINING_RULES, TrainingConfig, log, train
from model_build.data import read_interactions
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collaborative", help="train the item-item, sequence and matrix-factorisation "
                                                         "models and their new-item maps")
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory")
    parser.add_argument("--out", type=Path, default=paths.COLLABORATIVE, help="output .npz")
    parser.add_argument("--catalog", type=Path, default=paths.CATALOG, help="the catalog stage's .npz")
    parser.add_argument("--fit", action="store_true", help="fit the blend weights on a validation carve of the data")
    parser.set_defaults(run=lambda args: run(args.data, args.out, args.catalog, args.fit))


def run(data: Path, out: Path, catalog: Path = paths.CATALOG, fit: bool = False) -> int:
    """Trains and writes the model, unless `out` was trained on the same data and item vectors
    with the same code and settings and no fit is asked for (a fitted `out` stays: its
    weights were fitted on this same data)."""
    started = time.perf_counter()
    index, catalog_meta = ItemIndex.from_npz(Path(catalog))
    source = fingerprint(data, f"collaborative:{CollaborativeModel.FORMAT}:{TRAINING_RULES}:{TrainingConfig()}:"
                               f"{catalog_meta.get('source')}")
    if out.exists() and not fit:
        try:
            _, existing = CollaborativeModel.from_npz(out.read_bytes())
        except ValueError:  # another format (ArtifactFormatError): retrain
            existing = {}
        if existing.get("source") == source:
            print(f"collaborative: {out} is current, nothing to do", file=sys.stderr)
            return 0
    interactions = list(read_interactions(data))
    meta = {"source": source, "item_vectors": str(catalog_meta.get("source"))}
    config = TrainingConfig()
    if fit:
        fitted = blend.fit(interactions, index)
        log(f"blend fitted on validation: {fitted.validation['blend']}, floor {fitted.floor} ({fitted.floor_from})"
            + ("" if fitted.floor_met else ": NOT MET, serving the floor's own weighting"))
        meta["blend"] = fitted.weights.to_json()
        config = fitted.config
        meta["training"] = json.dumps(asdict(config), sort_keys=True)
    model = train(interactions, index, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.to_npz(**meta))
    print(f"collaborative: {len(model.item_ids)} items, {model.dim} factors -> {out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
