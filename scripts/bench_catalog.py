"""Benchmark the catalog stage's embedding order on text of varied length (a product catalog's
descriptions): `model_build.catalog.embed`, which batches texts of like length together,
against the same chunks in the texts' own order, on the same texts, twice each, alternating.
The texts: a seeded sample of ml-latest-small items, each item's text repeated 1-8 times
(mean ~260 characters). Prints one JSON line (seconds, texts/s, the ratio, and whether both
orders give the same vectors), then the same for people. Needs the built encoder:

    .venv/bin/python scripts/bench_catalog.py [--texts 3000]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model_build import catalog, paths
from model_build.data import read_items
from recsys.encoder import Encoder

DATA = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"


def in_given_order(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """The stage before: chunks of catalog.BATCH in the texts' own order."""
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), catalog.BATCH):
        vectors[start:start + catalog.BATCH] = encoder.encode(texts[start:start + catalog.BATCH])
    return vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    items = read_items(DATA)
    rng = random.Random(args.seed)
    texts = [" ".join([items[i].text] * rng.randint(1, 8)) for i in rng.sample(range(len(items)), args.texts)]
    encoder = Encoder(paths.ENCODER_MODEL, threads=2)
    encoder.encode(texts[:64])  # warm up
    runs: dict[str, list[float]] = {"given order": [], "by length": []}
    vectors: dict[str, np.ndarray] = {}
    ways: dict[str, Callable[[Encoder, list[str]], np.ndarray]] = {"given order": in_given_order,
                                                                    "by length": catalog.embed}
    for _ in range(2):
        for name, way in ways.items():
            started = time.perf_counter()
            vectors[name] = way(encoder, texts)
            runs[name].append(time.perf_counter() - started)
    best = {name: min(seconds) for name, seconds in runs.items()}
    result = {"texts": len(texts), "mean_characters": round(float(np.mean([len(t) for t in texts])), 1),
              "seconds": {name: [round(s, 1) for s in seconds] for name, seconds in runs.items()},
              "texts_per_second": {name: round(len(texts) / s, 1) for name, s in best.items()},
              "speedup": round(best["given order"] / best["by length"], 2),
              # padding changes the int8 activations' blocks a little, so compare as the gate does
              "min_cosine": round(float(np.min(np.sum(vectors["given order"] * vectors["by length"], axis=1))), 4)}
    print(json.dumps(result))
    print(f"{len(texts)} texts of {result['mean_characters']} characters on average: "
          f"given order {result['texts_per_second']['given order']} texts/s, by length "
          f"{result['texts_per_second']['by length']} texts/s ({result['speedup']}x); "
          f"lowest cosine between the two orders' vectors {result['min_cosine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
