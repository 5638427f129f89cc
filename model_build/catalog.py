"""Stage `catalog`: embed every item of a dataset with the final encoder, and count interactions.

Output: one .npz (item ids, unit vectors, interaction counts, model version, and a
fingerprint of its inputs, so a rerun with the same model and data does nothing). Texts
embedded before by the same encoder come from the vector cache (model_build.vector_cache):
only new or changed items are embedded.
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

from model_build import paths, vector_cache
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
    parser.add_argument("--cache", type=Path, default=paths.VECTOR_CACHE,
                        help="vectors of texts embedded before (read and rewritten)")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="item vectors computed before (a catalog .npz, e.g. from a GPU box): its items take "
                             "them, the rest are embedded")
    parser.set_defaults(run=lambda args: run(args.data, args.model, args.out, args.force, args.cache, args.vectors))


def fingerprint(data: Path, model_version: str) -> str:
    digest = hashlib.sha256(f"{model_version}:{ItemIndex.FORMAT}".encode())
    for name in sorted(os.listdir(data)):
        if name.endswith((".csv", ".jsonl")):
            digest.update(name.encode())
            digest.update(hashlib.sha256((data / name).read_bytes()).digest())
    return digest.hexdigest()[:32]


def embed(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """The texts' vectors, in chunks of BATCH (the progress bar's steps), texts of like length
    together: the encoder pads each batch to its longest text, so on text of varied length
    this is about twice as fast as the texts' own order (scripts/bench_catalog.py)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in progress(range(0, len(order), BATCH), "catalog: embedding", unit="batch"):
        rows = order[start:start + BATCH]
        vectors[rows] = encoder.encode([texts[i] for i in rows])
    return vectors


def run(data: Path, model: Path, out: Path, force: bool = False, cache: Path | None = paths.VECTOR_CACHE,
        vectors_from: Path | None = None) -> int:
    """`vectors_from`: a catalog .npz whose items keep its vectors (computed elsewhere, as this
    stage computes them: one that names another encoder version is refused)."""
    encoder = Encoder(model, threads=os.cpu_count() or 1)
    given: ItemIndex | None = None
    source = fingerprint(data, encoder.version)
    if vectors_from is not None:
        given, given_meta = ItemIndex.from_npz(Path(vectors_from))
        named = given_meta.get("model_version")
        if given.dim != encoder.dim or (named and named != encoder.version):
            raise SystemExit(f"catalog: {vectors_from} holds {given.dim}-d vectors of {named or 'no named encoder'}, "
                             f"not {encoder.dim}-d vectors of {encoder.version}")
        source = hashlib.sha256(f"{source}:{given_meta.get('source')}:{len(given)}".encode()).hexdigest()[:32]
    if out.exists() and not force:
        try:
            current, meta = ItemIndex.from_npz(out)
        except ValueError:  # another format (ArtifactFormatError): rebuild
            current, meta = None, {}
        if current is not None and meta.get("source") == source:
            if cache and not cache.exists() and given is None:  # a catalog built before the cache existed seeds it
                items = read_items(data)
                vector_cache.save(cache, encoder.version, [item.text_hash for item in items],
                                  current.vectors_at(np.array([current.rows[item.item_id] for item in items])))
            print(f"catalog: {out} is current ({encoder.version}), nothing to do")
            return 0
    items = read_items(data)
    counts = Counter(i.item_id for i in read_interactions(data) if i.type not in ("hide", "dislike"))
    started = time.perf_counter()
    hashes = [item.text_hash for item in items]
    known = vector_cache.VectorCache.load(cache, encoder.version, encoder.dim) if cache else None
    vectors = np.zeros((len(items), encoder.dim), dtype=np.float32)
    todo = []
    given_rows = np.array([given.rows.get(item.item_id, -1) if given is not None else -1 for item in items],
                          dtype=np.int64)
    for row, text_hash in enumerate(hashes):
        if given_rows[row] >= 0:
            continue
        cached = known.get(text_hash) if known else None
        if cached is None:
            todo.append(row)
        else:
            vectors[row] = cached
    if todo:
        vectors[todo] = embed(encoder, [items[row].text for row in todo])
    if given is not None:  # the given vectors, a block at a time
        taken = np.flatnonzero(given_rows >= 0)
        for start in range(0, len(taken), 1 << 16):
            part = taken[start:start + (1 << 16)]
            vectors[part] = given.vectors_at(given_rows[part])
    seconds = time.perf_counter() - started
    print(f"catalog: {len(items)} items, {len(todo)} embedded in {seconds:.1f} s"
          f"{f' ({len(todo) / seconds:.0f} items/s)' if todo and seconds else ''}, "
          f"{len(items) - len(todo)} from the vector cache or {vectors_from}", file=sys.stderr)
    if cache and given is None:  # given vectors are not this encoder's output for these texts
        vector_cache.save(cache, encoder.version, hashes, vectors)
    index = ItemIndex(encoder.dim, capacity=len(items))
    index.extend([item.item_id for item in items], vectors,
                 np.array([counts[item.item_id] for item in items], dtype=np.float32),
                 [item.categories for item in items])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(index.to_npz(model_version=encoder.version, source=source))
    print(f"catalog: wrote {out}")
    return 0
