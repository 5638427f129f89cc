"""Stage `synthetic`: a seeded synthetic dataset at any scale, for measuring the build job.

Writes, in the documented schema (model_build/data.py): `items.csv` (item_id, title,
genres, tags) and `events.csv` (user_id, item_id, rating, timestamp, type, event_id,
dwell_seconds, query), and `catalog.npz`, the catalog stage's output with precomputed
vectors (clustered random unit vectors in place of encoded text, as `--catalog` takes).

Items fall in topics; an item's popularity is Zipf-like over a random order (a long
tail: most items are chosen rarely, some never). A user has one home topic and history
length drawn log-normally; each choice comes from the home topic with probability 0.7,
else from the whole catalog, by popularity. Event types and dwell are mixed as a shop's
would be (ratings, views, clicks with dwell, carts, purchases, some hides and dislikes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from model_build.progress import progress
from recsys.index import ItemIndex

TOPICS = 200
GENRES = ("action", "comedy", "drama", "garden", "kitchen", "outdoor", "books", "music", "sport", "travel",
          "kids", "fashion", "tools", "health", "games", "science", "history", "art", "food", "tech")
WORDS = ("red", "quiet", "golden", "small", "northern", "wild", "classic", "bright", "hidden", "last",
         "river", "garden", "city", "night", "stone", "storm", "market", "journey", "letter", "machine")
TYPES = ("rating", "view", "click", "add_to_cart", "purchase", "hide", "dislike")
TYPE_SHARE = (0.35, 0.2, 0.3, 0.07, 0.05, 0.02, 0.01)
DIM = 384
CHUNK = 1 << 18


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synthetic", help="write a seeded synthetic dataset and its item vectors")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(run=lambda args: run(args.out, args.items, args.interactions, args.seed))


def run(out: Path, n_items: int, n_interactions: int, seed: int) -> int:
    if n_items < 1 or n_interactions < 1:
        raise SystemExit("synthetic: --items and --interactions must be positive")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    topic = rng.integers(0, TOPICS, n_items)
    popularity = 1.0 / (rng.permutation(n_items) + 10.0) ** 1.05
    write_items(out / "items.csv", topic, rng)
    write_vectors(out / "catalog.npz", topic, rng)
    write_events(out / "events.csv", topic, popularity, n_interactions, rng)
    print(f"synthetic: {n_items} items, {n_interactions} events -> {out}", file=sys.stderr)
    return 0


def write_items(path: Path, topic: np.ndarray, rng: np.random.Generator) -> None:
    words = rng.integers(0, len(WORDS), (len(topic), 3))
    tags = rng.integers(0, len(WORDS), (len(topic), 2))
    with open(path, "w", encoding="utf-8") as f:
        f.write("item_id,title,genres,tags\n")
        for i in progress(range(len(topic)), "synthetic: items", unit="item"):
            t = int(topic[i])
            w = words[i]
            f.write(f"i{i},The {WORDS[w[0]]} {WORDS[w[1]]} of the {WORDS[w[2]]},"
                    f"{GENRES[t % len(GENRES)]}|{GENRES[(t // len(GENRES)) % len(GENRES)]},"
                    f"{WORDS[tags[i, 0]]}|{WORDS[tags[i, 1]]}\n")


def write_vectors(path: Path, topic: np.ndarray, rng: np.random.Generator) -> None:
    centres = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((len(topic), DIM), dtype=np.float32)
    for start in range(0, len(topic), CHUNK):
        part = centres[topic[start:start + CHUNK]] + 0.08 * rng.normal(size=(len(topic[start:start + CHUNK]), DIM))
        vectors[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    index = ItemIndex(DIM, capacity=len(topic))
    index.extend([f"i{i}" for i in range(len(topic))], vectors, np.zeros(len(topic)))
    path.write_bytes(index.to_npz(source=f"synthetic:{len(topic)}"))


def write_events(path: Path, topic: np.ndarray, popularity: np.ndarray, n: int, rng: np.random.Generator) -> None:
    by_topic = np.argsort(topic, kind="stable")
    cumulative = np.cumsum(popularity[by_topic])
    bounds = np.searchsorted(topic[by_topic], np.arange(TOPICS + 1))
    lengths = np.maximum(1, rng.lognormal(2.3, 1.0, n // 10 + 1).astype(np.int64))
    lengths = lengths[:int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    lengths[-1] -= lengths.sum() - n
    user = np.repeat(np.arange(len(lengths)), lengths)
    home = rng.integers(0, TOPICS, len(lengths))[user]
    low = np.where(bounds[home] > 0, cumulative[np.maximum(bounds[home] - 1, 0)], 0.0)
    high = cumulative[np.maximum(bounds[home + 1] - 1, 0)]
    in_topic = rng.random(n) < 0.7
    draw = np.where(in_topic, low + rng.random(n) * (high - low), rng.random(n) * cumulative[-1])
    item = by_topic[np.minimum(np.searchsorted(cumulative, draw), len(topic) - 1)]
    kind = rng.choice(len(TYPES), n, p=TYPE_SHARE)
    rating = np.clip(np.round(rng.normal(3.6, 1.0, n) * 2) / 2, 0.5, 5.0)
    dwell = np.round(rng.lognormal(3.0, 1.2, n), 1)
    timestamp = 1_600_000_000 + np.cumsum(rng.integers(1, 600, n))
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id,item_id,rating,timestamp,type,event_id,dwell_seconds,query\n")
        for start in progress(range(0, n, CHUNK), "synthetic: events", unit="chunk"):
            lines = []
            for e in range(start, min(n, start + CHUNK)):
                k = TYPES[kind[e]]
                lines.append(f"u{user[e]},i{item[e]},{rating[e] if k == 'rating' else ''},{timestamp[e]},{k},"
                             f"e{e},{dwell[e] if k == 'click' else ''},\n")
            f.write("".join(lines))
