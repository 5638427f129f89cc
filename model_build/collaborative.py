"""Stage `collaborative`: train the item-item (EASE), sequence and matrix-factorisation (ALS)
models, and the maps that predict them for a new item from its vector.

Every interaction counts as one implicit "chose it" (ratings included, whatever the
value: the next thing a user rates is the next thing they chose to watch). What
recsys/collaborative.py scores is written as one .npz; see there for the models. The
item vectors come from the catalog stage's .npz (the maps are fitted in their space).
The blend weights fitted with --fit on a validation carve of this data travel in the
same file; without --fit, the functions use the defaults (recsys.scoring.BlendWeights).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_build import paths
from model_build.catalog import fingerprint
from model_build.data import Interaction, read_interactions
from model_build.progress import progress
from recsys.collaborative import CollaborativeModel, ItemRows
from recsys.index import ItemIndex


@dataclass(frozen=True)
class TrainingConfig:
    """Chosen on a validation split carved from train.csv (see README, "Offline evaluation")."""

    ease_l2: float = 300.0
    neighbours: int = 200  # item-item entries kept per item
    max_items: int = 20_000  # the item-item model covers the most chosen items, at most this many
    factors: int = 64
    als_regularization: float = 20.0
    als_alpha: float = 10.0
    als_iterations: int = 10
    # Ridge penalty of the maps from item vectors to item-item columns and to (q_i, b_i):
    # on validation, new items ranked among themselves by the mapped item-item score had
    # recall@20 0.170 / 0.175 / 0.174 / 0.165 at 3 / 10 / 30 / 100.
    content_map_l2: float = 10.0
    # The sequence model: pairs chosen within this many consecutive choices (on validation
    # the window 3 / 10 / 30 / 100 gave ndcg@10 0.163 / 0.174 / 0.177 / 0.174 at weight 1).
    sequence_window: int = 30
    sequence_backward: float = 0.5
    seed: int = 7


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
    index, catalog_meta = ItemIndex.from_npz(Path(catalog).read_bytes())
    source = fingerprint(data, f"collaborative:{CollaborativeModel.FORMAT}:{TrainingConfig()}:"
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
    if fit:
        from model_build import blend
        weights, figures = blend.fit(interactions, index)
        log(f"blend fitted on validation: {figures['blend']}")
        meta["blend"] = weights.to_json()
    model = train(interactions, index)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.to_npz(**meta))
    print(f"collaborative: {len(model.item_ids)} items, {model.dim} factors -> {out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


def train(interactions: Iterable[Interaction], index: ItemIndex,
          config: TrainingConfig = TrainingConfig()) -> CollaborativeModel:
    """Every model on the interactions, with maps from `index`'s item vectors to their item side
    (an item the index lacks counts as a zero vector)."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in interactions:
        by_user[row.user_id].append(row)
    counts: dict[str, int] = defaultdict(int)
    for rows in by_user.values():
        for item_id in {r.item_id for r in rows}:
            counts[item_id] += 1
    item_ids = sorted(counts, key=lambda i: (-counts[i], i))[: config.max_items]
    if not item_ids:
        raise ValueError("collaborative: no interactions to train on")
    column = {item_id: c for c, item_id in enumerate(item_ids)}
    timelines = []  # each user's items in the order chosen, each once
    for rows in by_user.values():
        ordered = dict.fromkeys(column[r.item_id] for r in sorted(rows, key=lambda r: r.timestamp)
                                if r.item_id in column)
        if ordered:
            timelines.append(np.fromiter(ordered, dtype=np.int64))
    histories = [np.sort(timeline) for timeline in timelines]
    vectors = np.zeros((len(item_ids), index.dim), dtype=np.float32)
    for c, item_id in enumerate(item_ids):
        vector = index.vector(item_id)
        if vector is not None:
            vectors[c] = vector
    item_item = ease(histories, len(item_ids), vectors, config)
    log(f"item-item: {len(item_ids)} items, {config.neighbours} neighbours each")
    in_sequence = sequence(timelines, len(item_ids), vectors, config)
    log(f"sequence: window {config.sequence_window}")
    factors, biases = als(histories, len(item_ids), config)
    factor_map = ridge(vectors, np.hstack([factors, biases[:, None]]), config.content_map_l2)
    choosers = np.log1p(np.array([counts[i] for i in item_ids], dtype=np.float64))
    with_intercept = np.hstack([vectors, np.ones((len(item_ids), 1), np.float32)])
    popularity_map = ridge(with_intercept, (choosers / choosers.max())[:, None], config.content_map_l2)[:, 0]
    return CollaborativeModel(item_ids, item_item, in_sequence, factors, biases, config.als_regularization,
                              config.als_alpha, factor_map, popularity_map)


def ridge(inputs: np.ndarray, targets: np.ndarray, l2: float) -> np.ndarray:
    """W minimising |inputs W - targets|^2 + l2 |W|^2."""
    x = inputs.astype(np.float64)
    moment = (inputs.T @ targets).astype(np.float64)  # in the targets' precision: B is n x n
    return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), moment).astype(np.float32)


def ease(histories: list[np.ndarray], n_items: int, vectors: np.ndarray, config: TrainingConfig) -> ItemRows:
    """B = I - P / diag(P), P = (X'X + l2 I)^-1, zero diagonal (see `sparse_rows`)."""
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    for start in range(0, len(histories), 1024):  # X'X, 1024 users at a time
        chunk = np.zeros((len(histories[start:start + 1024]), n_items), dtype=np.float32)
        for row, history in enumerate(histories[start:start + 1024]):
            chunk[row, history] = 1.0
        gram += chunk.T @ chunk
    gram[np.diag_indices(n_items)] += config.ease_l2
    precision = np.linalg.inv(gram)
    del gram
    weights = (precision / -np.diag(precision)).astype(np.float32)
    del precision
    return sparse_rows(weights, vectors, config)


def sequence(timelines: list[np.ndarray], n_items: int, vectors: np.ndarray, config: TrainingConfig) -> ItemRows:
    """C[h, j] = how often j was chosen within `sequence_window` choices after h (and, weighted
    `sequence_backward`, before it), over sqrt((t_h + 1)(t_j + 1)), t an item's row total: a
    cosine of choosing close together in time (see `sparse_rows`)."""
    together = np.zeros((n_items, n_items), dtype=np.float32)
    for timeline in timelines:
        for offset in range(1, min(config.sequence_window, len(timeline) - 1) + 1):
            before, after = timeline[:-offset], timeline[offset:]
            together[before, after] += 1.0  # a user's items are distinct: no pair repeats per offset
            together[after, before] += config.sequence_backward
    norm = 1.0 / np.sqrt(together.sum(1) + 1.0)
    together *= norm[:, None]
    together *= norm[None, :]
    return sparse_rows(together, vectors, config)


def sparse_rows(matrix: np.ndarray, vectors: np.ndarray, config: TrainingConfig) -> ItemRows:
    """The strongest `neighbours` entries of each row of a dense item-item matrix (zero diagonal),
    and its content map M, the ridge fit of the matrix's columns on the item vectors V
    (matrix ~ M V'): a new item with vector v gets the column M v."""
    n_items = len(matrix)
    np.fill_diagonal(matrix, 0.0)
    content_map = ridge(vectors, matrix.T, config.content_map_l2).T.copy()
    keep = min(config.neighbours, n_items - 1) if n_items > 1 else 0
    if keep == 0:
        return ItemRows(np.full((n_items, 1), -1, dtype=np.int32), np.zeros((n_items, 1), dtype=np.float32),
                        content_map)
    rows = np.zeros((n_items, keep), dtype=np.int32)
    for start in range(0, n_items, 2048):  # a block of rows at a time: argpartition's output is int64
        block = matrix[start:start + 2048]
        rows[start:start + len(block)] = np.argpartition(-np.abs(block), keep - 1, axis=1)[:, :keep]
    return ItemRows(rows, np.take_along_axis(matrix, rows, 1), content_map)


def als(histories: list[np.ndarray], n_items: int, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS with biases: confidence 1 + alpha on chosen items, 1 elsewhere (preference 0).

    Biases ride along as an extra coordinate: users solve for (q_u, b_u) against [q_i, 1]
    with target p - b_i, items for (q_i, b_i) against [q_u, 1] with target p - b_u.
    """
    rng = np.random.default_rng(config.seed)
    k = config.factors
    items = rng.normal(0, 0.01, (n_items, k))
    item_bias = np.zeros(n_items)
    users = np.zeros((len(histories), k))
    user_bias = np.zeros(len(histories))
    by_item: list[list[int]] = [[] for _ in range(n_items)]
    for user, history in enumerate(histories):
        for item in history:
            by_item[item].append(user)
    item_histories = [np.array(u, dtype=np.int64) for u in by_item]
    for _ in progress(range(config.als_iterations), "collaborative: als", unit="iteration"):
        _solve_side(histories, items, item_bias, users, user_bias, config)
        _solve_side(item_histories, users, user_bias, items, item_bias, config)
    return items.astype(np.float32), item_bias.astype(np.float32)


def _solve_side(chosen: list[np.ndarray], other: np.ndarray, other_bias: np.ndarray,
                out: np.ndarray, out_bias: np.ndarray, config: TrainingConfig) -> None:
    """One half-step of ALS: every row of `out` given the fixed `other` side."""
    z = np.hstack([other, np.ones((len(other), 1))])
    gram = z.T @ z + config.als_regularization * np.eye(z.shape[1])
    bias_moment = z.T @ other_bias
    confidence = 1.0 + config.als_alpha
    for row, picked in enumerate(chosen):
        if len(picked) == 0:
            out[row], out_bias[row] = 0.0, 0.0
            continue
        zp, bias = z[picked], other_bias[picked]
        matrix = gram + (confidence - 1.0) * (zp.T @ zp)
        target = zp.T @ (confidence * (1.0 - bias) + bias) - bias_moment
        solution = np.linalg.solve(matrix, target)
        out[row], out_bias[row] = solution[:-1], solution[-1]


def log(message: str) -> None:
    print(f"collaborative: {message}", file=sys.stderr, flush=True)
