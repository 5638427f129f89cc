"""Training the collaborative models: item-item (EASE), sequence and matrix factorisation
(implicit ALS with biases), and the ridge maps that predict each for a new item from its
vector (see recsys/collaborative.py, which scores them). The `collaborative` stage and the
blend fit on a validation carve both train with `train`.

Every positive choice counts as one implicit "chose it" (`model_build.data.positive_choices`:
the rule the profile applies at request time; a rating is one unless it is below the user's
tolerance, a hide, a dislike or a bounce never is).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from model_build.data import Interaction, positive_choices
from model_build.progress import progress
from recsys.collaborative import CollaborativeModel, ItemRows, Transfer, transfer_neighbours
from recsys.index import ItemIndex

# What the training reads of the interactions; a change retrains outputs that look current.
# 2: positive choices only (negative feedback never trains a model).
TRAINING_RULES = 2


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


def train(interactions: Iterable[Interaction], index: ItemIndex,
          config: TrainingConfig = TrainingConfig()) -> CollaborativeModel:
    """Every model on the interactions, with maps from `index`'s item vectors to their item side
    (an item the index lacks counts as a zero vector)."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in positive_choices(interactions):
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
    projection = np.linalg.inv(vectors.T.astype(np.float64) @ vectors
                               + config.content_map_l2 * np.eye(index.dim)).astype(np.float32)
    item_item = ease(histories, len(item_ids), projection, config)
    log(f"item-item: {len(item_ids)} items, {config.neighbours} neighbours each")
    in_sequence = sequence(timelines, len(item_ids), projection, config)
    log(f"sequence: window {config.sequence_window}")
    factors, biases = als(histories, len(item_ids), config)
    factor_map = ridge(vectors, np.hstack([factors, biases[:, None]]), config.content_map_l2)
    choosers = np.log1p(np.array([counts[i] for i in item_ids], dtype=np.float64))
    with_intercept = np.hstack([vectors, np.ones((len(item_ids), 1), np.float32)])
    popularity_map = ridge(with_intercept, (choosers / choosers.max())[:, None], config.content_map_l2)[:, 0]
    cold = [item_id for item_id in index.ids if item_id not in column]
    nearest, weights = transfer_neighbours(vectors, index.vectors[[index.rows[i] for i in cold]])
    log(f"transfer: {len(cold)} catalog items without evidence borrow from their nearest")
    return CollaborativeModel(item_ids, item_item, in_sequence, factors, biases, config.als_regularization,
                              config.als_alpha, factor_map, popularity_map,
                              Transfer(cold, nearest.astype(np.int32), weights))


def ridge(inputs: np.ndarray, targets: np.ndarray, l2: float) -> np.ndarray:
    """W minimising |inputs W - targets|^2 + l2 |W|^2."""
    x = inputs.astype(np.float64)
    moment = (inputs.T @ targets).astype(np.float64)  # in the targets' precision: B is n x n
    return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), moment).astype(np.float32)


def ease(histories: list[np.ndarray], n_items: int, projection: np.ndarray, config: TrainingConfig) -> ItemRows:
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
    return sparse_rows(weights, projection, config)


def sequence(timelines: list[np.ndarray], n_items: int, projection: np.ndarray, config: TrainingConfig) -> ItemRows:
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
    return sparse_rows(together, projection, config)


def sparse_rows(matrix: np.ndarray, projection: np.ndarray, config: TrainingConfig) -> ItemRows:
    """The strongest `neighbours` entries of each row of a dense item-item matrix (zero diagonal),
    with the projection of the ridge fit of its columns on the item vectors V: for the kept
    rows S, S ~ (S V projection) V', so a new item with vector v gets the column S V projection v
    (see recsys/collaborative.py)."""
    n_items = len(matrix)
    np.fill_diagonal(matrix, 0.0)
    keep = min(config.neighbours, n_items - 1) if n_items > 1 else 0
    if keep == 0:
        return ItemRows(np.full((n_items, 1), -1, dtype=np.int32), np.zeros((n_items, 1), dtype=np.float32),
                        projection)
    rows = np.zeros((n_items, keep), dtype=np.int32)
    for start in range(0, n_items, 2048):  # a block of rows at a time: argpartition's output is int64
        block = matrix[start:start + 2048]
        rows[start:start + len(block)] = np.argpartition(-np.abs(block), keep - 1, axis=1)[:, :keep]
    return ItemRows(rows, np.take_along_axis(matrix, rows, 1), projection)


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
