"""Training the collaborative models: item-item, sequence and matrix factorisation (implicit
ALS with biases), and the ridge maps that predict each for a new item from its vector (see
recsys/collaborative.py, which scores them). The `collaborative` stage and the blend fit on
a validation carve both train with `train`.

Each user's positive choices (`model_build.data.weighted_choices`: the rule and the choice
weights the profile applies at request time; a hide, a dislike, a bounce or a rating below
the user's tolerance is never one) form a weighted, time-ordered history: the weights are
ALS's confidence (1 + alpha w) and the co-occurrence counts' (w_h w_j).

Every model covers every chosen item and costs O(choices x window), never n x n dense:
- item-item: EASE (Steck 2019) on the `ease_items` most chosen items, whose Gram and
  inverse (8 n^2 bytes each) fit in memory, and the cosine of co-occurrence within
  `item_window` consecutive choices for the rest (sparse, top `neighbours` per row);
- sequence: the same co-occurrence within `sequence_window` choices, after weighted 1 and
  before weighted `sequence_backward`;
- ALS: conjugate-gradient ALS (Takacs, Pilaszy, Tikk 2011) over the sparse user x item
  matrix, every row solved at once.
The maps from item vectors read the vectors a block at a time (d x d sums).
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
from scipy import sparse

from model_build.data import Interaction, weighted_choices
from model_build.progress import progress
from recsys.collaborative import TRANSFER_NEIGHBOURS, CollaborativeModel, ItemRows, Transfer, nearest_of
from recsys.index import ItemIndex, quantized

# What the training reads of the interactions; a change retrains outputs that look current.
# 2: positive choices only (negative feedback never trains a model).
# 3: weighted by the profile's choice weights; every chosen item covered.
# 4: the model keeps each item's evidence (users who chose it) for the evidence prior.
TRAINING_RULES = 4
BLOCK = 1 << 20  # entries (choices, pairs, vector rows) handled at a time
T = TypeVar("T")
ALS_DTYPE = np.float32  # ALS factors and CG state: half float64's memory traffic; top 20 by factors agree 0.98
# New-item transfer: the candidates kept per neighbour from the low-precision products, scored again
# in float32 (`shortlist`): a nearest neighbour is missed only if those products rank it below 4 x 20th.
SHORTLIST = 4
TopRows = tuple[np.ndarray, np.ndarray]  # (n, N) int32 neighbour columns (-1 pads), (n, N) float32 weights


@dataclass(frozen=True)
class TrainingConfig:
    """Chosen on a validation split carved from train.csv (see README, "Offline evaluation")."""

    ease_l2: float = 300.0
    # EASE covers at most this many of the most chosen items: its Gram and inverse are
    # 2 x 8 n^2 bytes (6.4 GB at 20,000); the rest of the catalog is covered by co-occurrence.
    ease_items: int = 20_000
    item_window: int = 100  # the item-item co-occurrence: pairs within this many consecutive choices
    neighbours: int = 200  # item-item entries kept per item
    factors: int = 64
    als_regularization: float = 20.0
    als_alpha: float = 10.0
    als_iterations: int = 10
    als_cg_steps: int = 3  # conjugate-gradient steps per half-iteration, warm-started
    # Ridge penalty of the maps from item vectors to item-item columns and to (q_i, b_i):
    # on validation, new items ranked among themselves by the mapped item-item score had
    # recall@20 0.170 / 0.175 / 0.174 / 0.165 at 3 / 10 / 30 / 100.
    content_map_l2: float = 10.0
    # The sequence model: pairs chosen within this many consecutive choices (on validation
    # the window 3 / 10 / 30 / 100 gave ndcg@10 0.163 / 0.174 / 0.177 / 0.174 at weight 1).
    sequence_window: int = 30
    sequence_backward: float = 0.5
    # New items borrow from their nearest among this many most chosen items (a compute
    # budget: the search costs new items x this x d).
    transfer_candidates: int = 50_000
    seed: int = 7


@dataclass(frozen=True)
class Histories:
    """Every user's positive choices in the order first chosen (CSR: `indptr` over users,
    `items` model columns, `weights` choice weights); columns ordered most chosen first."""

    item_ids: list[str]
    choosers: np.ndarray  # (n,) users who chose each item
    indptr: np.ndarray  # (users + 1,) int64
    items: np.ndarray  # (choices,) int32
    weights: np.ndarray  # (choices,) float32

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def matrix(self) -> sparse.csr_matrix:
        """users x items, the choice weights."""
        matrix = sparse.csr_matrix((self.weights.copy(), self.items.copy(), self.indptr),
                                   shape=(len(self.indptr) - 1, self.n_items))
        matrix.sort_indices()  # in place: on copies, the histories keep their time order
        return matrix


class Parts:
    """The parts of `train` that depend on the interactions, the item vectors and their own
    settings only (the histories, the row models' top rows and their directions, ALS, the
    new-item transfer), kept between trainings on the same interactions and vectors: the blend
    fit's trials of training settings retrain only the part a setting shapes. `keep` drops the
    parts another setting made."""

    def __init__(self) -> None:
        self._found: dict[str, dict[tuple[Any, ...], Any]] = {}

    @staticmethod
    def keys(config: TrainingConfig) -> dict[str, tuple[Any, ...]]:
        ease = (config.ease_l2, config.ease_items, config.neighbours)
        item_cooccurrence = (config.ease_items, config.item_window, config.neighbours)
        sequence = (config.sequence_window, config.sequence_backward, config.neighbours)
        return {"histories": (), "ease": ease, "item_cooccurrence": item_cooccurrence, "sequence": sequence,
                # the rows with each row's direction for new items (`row_model`), which the content map shapes
                "item_item_rows": (*ease, *item_cooccurrence, config.content_map_l2),
                "sequence_rows": (*sequence, config.content_map_l2),
                "als": (config.factors, config.als_regularization, config.als_alpha, config.als_iterations,
                        config.als_cg_steps, config.seed),
                "transfer": (config.transfer_candidates,)}

    def get(self, part: str, config: TrainingConfig, compute: Callable[[], T]) -> T:
        found = self._found.setdefault(part, {})
        key = self.keys(config)[part]
        if key not in found:
            found[key] = compute()
        return cast(T, found[key])

    def keep(self, config: TrainingConfig) -> None:
        """Only the parts `config` trains with stay."""
        for part, key in self.keys(config).items():
            found = self._found.get(part, {})
            for other in [k for k in found if k != key]:
                del found[other]


def train(interactions: Iterable[Interaction], index: ItemIndex,
          config: TrainingConfig = TrainingConfig(), parts: Parts | None = None) -> CollaborativeModel:
    """Every model on the interactions, with maps from `index`'s item vectors to their item side
    (an item the index lacks counts as a zero vector). `parts`: those trained before on the
    same interactions and item vectors, reused where `config` agrees (see `Parts`)."""
    parts = parts or Parts()
    histories = parts.get("histories", config, lambda: read_histories(interactions))
    n = histories.n_items
    at = np.array([index.rows.get(item_id, -1) for item_id in histories.item_ids], dtype=np.int64)
    gram, vector_sum = vector_moments(index, at)
    projection = np.linalg.inv(gram + config.content_map_l2 * np.eye(index.dim)).astype(np.float32)
    head = parts.get("ease", config, lambda: ease_model(histories, config))  # first: its dense matrices go
    tail = parts.get("item_cooccurrence", config, lambda: cooccurrence_model(histories, config))  # before this
    sequence = parts.get("sequence", config, lambda: sequence_model(histories, config))
    # the model items' vectors (zero where the index lacks one), read once and only for a new row model
    vectors = functools.cache(lambda: np.vstack(list(_vector_blocks(index, at))))
    item_item = parts.get("item_item_rows", config, lambda: row_model(*_stack(head, tail), projection, vectors()))
    log(f"item-item: {n} items ({min(n, config.ease_items)} by EASE), {item_item.rows.shape[1]} neighbours each")
    in_sequence = parts.get("sequence_rows", config, lambda: row_model(*sequence, projection, vectors()))
    vectors.cache_clear()
    log(f"sequence: window {config.sequence_window}")
    factors, biases = parts.get("als", config, lambda: als(histories, config))
    targets = np.hstack([factors, biases[:, None]])
    factor_map = (projection.astype(np.float64) @ target_moment(index, at, targets)).astype(np.float32)
    choosers = np.log1p(histories.choosers.astype(np.float64))
    popularity = (choosers / choosers.max())[:, None]
    with_intercept = np.block([[gram, vector_sum[:, None]], [vector_sum[None, :], np.array([[n]])]])
    moment = np.vstack([target_moment(index, at, popularity), popularity.sum(0, keepdims=True)])
    popularity_map = np.linalg.solve(with_intercept + config.content_map_l2 * np.eye(index.dim + 1),
                                     moment)[:, 0].astype(np.float32)
    transfer = parts.get("transfer", config, lambda: new_item_transfer(index, histories, at, config))
    log(f"transfer: {len(transfer.item_ids)} catalog items without evidence borrow from their nearest")
    return CollaborativeModel(histories.item_ids, item_item, in_sequence, factors, biases, config.als_regularization,
                              config.als_alpha, factor_map, popularity_map, transfer,
                              histories.choosers.astype(np.float32))


def read_histories(interactions: Iterable[Interaction]) -> Histories:
    """The positive choices as `Histories`; a user's item counts once, at its first choice."""
    user_of: dict[str, int] = {}
    item_of: dict[str, int] = {}
    users, items, times, weights = [], [], [], []
    for row, weight in weighted_choices(interactions):
        users.append(user_of.setdefault(row.user_id, len(user_of)))
        items.append(item_of.setdefault(row.item_id, len(item_of)))
        times.append(row.timestamp)
        weights.append(weight)
    if not item_of:
        raise ValueError("collaborative: no interactions to train on")
    user = np.array(users, dtype=np.int64)
    item = np.array(items, dtype=np.int64)
    time = np.array(times, dtype=np.int64)
    del users, items, times
    order = np.lexsort((time, item, user))  # each (user, item) earliest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = (user[order][1:] != user[order][:-1]) | (item[order][1:] != item[order][:-1])
    kept = order[first]
    kept = kept[np.lexsort((time[kept], user[kept]))]  # each user's items in the order chosen
    choosers = np.bincount(item[kept], minlength=len(item_of))
    names = list(item_of)
    ranked = sorted(range(len(names)), key=lambda i: (-choosers[i], names[i]))
    column = np.empty(len(names), dtype=np.int32)
    column[ranked] = np.arange(len(names), dtype=np.int32)
    indptr = np.zeros(len(user_of) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user[kept], minlength=len(user_of)), out=indptr[1:])
    return Histories([names[i] for i in ranked], choosers[ranked], indptr, column[item[kept]],
                     np.array(weights, dtype=np.float32)[kept])


def vector_moments(index: ItemIndex, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V'V and V'1 over the model's items' vectors (zero where the index lacks one)."""
    gram = np.zeros((index.dim, index.dim))
    total = np.zeros(index.dim)
    for block in _vector_blocks(index, at):
        gram += block.T.astype(np.float64) @ block
        total += block.sum(0)
    return gram, total


def target_moment(index: ItemIndex, at: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """V' targets over the model's items' vectors, in float64."""
    moment = np.zeros((index.dim, targets.shape[1]))
    start = 0
    for block in _vector_blocks(index, at):
        moment += block.T.astype(np.float64) @ targets[start:start + len(block)]
        start += len(block)
    return moment


def _vector_blocks(index: ItemIndex, at: np.ndarray) -> Iterator[np.ndarray]:
    step = max(1, BLOCK // max(index.dim, 1))
    for start in range(0, len(at), step):
        rows = at[start:start + step]
        block = np.zeros((len(rows), index.dim), dtype=np.float32)
        present = rows >= 0
        block[present] = index.vectors_at(rows[present])
        yield block


def ease_model(histories: Histories, config: TrainingConfig) -> TopRows:
    """The item-item rows of the `ease_items` most chosen items: EASE over them."""
    m = min(histories.n_items, config.ease_items)
    return ease(histories, m, config) if m > 0 else _no_rows(0)


def cooccurrence_model(histories: Histories, config: TrainingConfig) -> TopRows:
    """The item-item rows of the items past the `ease_items` most chosen: the cosine of
    co-occurrence within `item_window` choices, over every item (none when EASE covers all)."""
    m = min(histories.n_items, config.ease_items)
    if m == histories.n_items:
        return _no_rows(0)
    cosines = cosine(symmetric(cooccurrence(histories, config.item_window, "item-item")))
    return top_rows(cosines[m:], config)


def _no_rows(n: int) -> TopRows:
    return np.full((n, 1), -1, dtype=np.int32), np.zeros((n, 1), dtype=np.float32)


def sequence_model(histories: Histories, config: TrainingConfig) -> TopRows:
    """The cosine rows of co-occurrence within `sequence_window` choices, after weighted 1 and
    before weighted `sequence_backward`."""
    forward = cooccurrence(histories, config.sequence_window, "sequence")
    return top_rows(cosine(forward + config.sequence_backward * forward.T), config)


def row_model(rows: np.ndarray, weights: np.ndarray, projection: np.ndarray, vectors: np.ndarray) -> ItemRows:
    """`ItemRows` of the top rows, with each row's direction for new items: D_h = (sum_k
    weights[h, k] vectors[rows[h, k]]) @ projection, as int8 codes and scales (`vectors`: the
    model items' vectors, (n, d)); a sparse product, a block of rows at a time."""
    rows, weights = np.asarray(rows, dtype=np.int32), np.asarray(weights, dtype=np.float32)
    valid = rows >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(1))])
    spread = sparse.csr_matrix((weights[valid], rows[valid], indptr), shape=(len(rows), len(vectors)))
    codes = np.zeros((len(rows), projection.shape[0]), dtype=np.int8)
    scales = np.zeros(len(rows), dtype=np.float32)
    step = max(1, BLOCK // max(projection.shape[0], 1))
    for start in progress(range(0, len(rows), step), "collaborative: row directions", unit="block"):
        summed = spread[start:start + step] @ vectors
        codes[start:start + step], scales[start:start + step] = quantized(summed @ projection)
    return ItemRows(rows, weights, projection, codes, scales)


def _stack(head: TopRows, tail: TopRows) -> TopRows:
    width = max(head[0].shape[1], tail[0].shape[1])
    rows = np.full((len(head[0]) + len(tail[0]), width), -1, dtype=np.int32)
    weights = np.zeros(rows.shape, dtype=np.float32)
    for start, (part_rows, part_weights) in ((0, head), (len(head[0]), tail)):
        rows[start:start + len(part_rows), :part_rows.shape[1]] = part_rows
        weights[start:start + len(part_rows), :part_rows.shape[1]] = part_weights
    return rows, weights


def ease(histories: Histories, m: int, config: TrainingConfig) -> TopRows:
    """The top rows of B = I - P / diag(P), P = (X'X + l2 I)^-1 over the first m items, B's rows
    a block at a time. P by Cholesky with torch's LAPACK (MKL), the factor written over the
    Gram: two dense m x m float64 matrices at most (numpy's inverse holds four, and the
    threaded Cholesky and LU of the OpenBLAS numpy and scipy ship crashed on this machine at
    m = 16,384 and 20,000)."""
    import torch  # the build job's dependency (export, fine-tuning); imported where EASE runs

    x = histories.matrix()[:, :m]
    gram = (x.T @ x).astype(np.float64).toarray()
    gram[np.diag_indices(m)] += config.ease_l2
    log(f"item-item: EASE over {m} items")
    factor = torch.from_numpy(gram)
    torch.linalg.cholesky(factor, out=factor)  # X'X + l2 I is positive definite for any l2 > 0
    precision = torch.cholesky_inverse(factor).numpy()
    del gram, factor
    keep = min(config.neighbours, m - 1)
    if keep <= 0:
        return _no_rows(m)
    scale = (-1.0 / np.diag(precision)).astype(np.float32)
    rows = np.zeros((m, keep), dtype=np.int32)
    weights = np.zeros((m, keep), dtype=np.float32)
    for start in progress(range(0, m, 2048), "collaborative: EASE rows", unit="block"):
        end = min(m, start + 2048)
        block = precision[start:end].astype(np.float32) * scale
        block[np.arange(end - start), np.arange(start, end)] = 0.0
        rows[start:end] = np.argpartition(-np.abs(block), keep - 1, axis=1)[:, :keep]
        weights[start:end] = np.take_along_axis(block, rows[start:end], 1)
    return rows, weights


def cooccurrence(histories: Histories, window: int, name: str) -> sparse.csr_matrix:
    """F[h, j] = sum over users of w_h w_j for j chosen within `window` choices after h:
    O(choices x window), a block of pairs at a time."""
    n = histories.n_items
    lengths = np.diff(histories.indptr)
    position = np.arange(len(histories.items)) - np.repeat(histories.indptr[:-1], lengths)
    remaining = np.repeat(lengths, lengths) - position - 1  # choices after each one
    total = sparse.csr_matrix((n, n), dtype=np.float32)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    size = 0
    for offset in progress(range(1, window + 1), f"collaborative: {name} pairs", unit="offset"):
        at = np.flatnonzero(remaining >= offset)
        if not len(at):
            break
        pending.append((histories.items[at], histories.items[at + offset],
                        histories.weights[at] * histories.weights[at + offset]))
        size += len(at)
        if size >= 16 * BLOCK:
            total = total + _summed(pending, n)
            pending, size = [], 0
    if pending:
        total = total + _summed(pending, n)
    return total.tocsr()


def _summed(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> sparse.csr_matrix:
    before, after, weight = (np.concatenate(part) for part in zip(*pairs, strict=True))
    return sparse.coo_matrix((weight, (before, after)), shape=(n, n)).tocsr()


def symmetric(forward: sparse.csr_matrix) -> sparse.csr_matrix:
    return (forward + forward.T).tocsr()


def cosine(together: sparse.csr_matrix) -> sparse.csr_matrix:
    """C[h, j] / sqrt((t_h + 1)(t_j + 1)), t an item's row total, zero diagonal."""
    together = together.tocsr()
    together.setdiag(0.0)
    together.eliminate_zeros()
    norm = 1.0 / np.sqrt(np.asarray(together.sum(1)).ravel() + 1.0)
    return sparse.diags(norm.astype(np.float32)) @ together @ sparse.diags(norm.astype(np.float32))


def top_rows(matrix: sparse.csr_matrix, config: TrainingConfig) -> TopRows:
    """The strongest `neighbours` entries of each row of a sparse item-item matrix (-1 pads):
    the rows and weights of an `ItemRows`, which adds the projection of the ridge fit of its
    columns on the item vectors V (for the kept rows S, S ~ (S V projection) V', so a new item
    with vector v gets the column S V projection v; see recsys/collaborative.py)."""
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    lengths = np.diff(matrix.indptr)
    keep = max(1, min(config.neighbours, int(lengths.max(initial=0))))
    rows = np.full((matrix.shape[0], keep), -1, dtype=np.int32)
    weights = np.zeros((matrix.shape[0], keep), dtype=np.float32)
    start = 0
    while start < matrix.shape[0]:  # blocks of rows of about 16 BLOCK entries
        end = int(np.searchsorted(matrix.indptr, matrix.indptr[start] + 16 * BLOCK, side="right"))
        end = min(matrix.shape[0], max(end - 1, start + 1))
        block = matrix[start:end]
        row = np.repeat(np.arange(end - start), np.diff(block.indptr))
        order = np.lexsort((-np.abs(block.data), row))
        rank = np.arange(len(order)) - block.indptr[row[order]]
        chosen = order[rank < keep]
        rows[start + row[chosen], rank[rank < keep]] = block.indices[chosen]
        weights[start + row[chosen], rank[rank < keep]] = block.data[chosen]
        start = end
    return rows, weights


def als(histories: Histories, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS with biases: confidence 1 + alpha w on chosen items (w the choice weight),
    1 elsewhere (preference 0). Biases ride along as an extra coordinate: users solve for
    (q_u, b_u) against [q_i, 1] with target p - b_i, items for (q_i, b_i) against [q_u, 1]
    with target p - b_u."""
    rng = np.random.default_rng(config.seed)
    by_user = histories.matrix()
    by_user.data = (config.als_alpha * by_user.data).astype(np.float32)  # confidence - 1
    by_item = by_user.T.tocsr()
    k = config.factors
    items = np.hstack([rng.normal(0, 0.01, (histories.n_items, k)), np.zeros((histories.n_items, 1))]).astype(ALS_DTYPE)
    users = np.zeros((by_user.shape[0], k + 1), dtype=ALS_DTYPE)
    for _ in progress(range(config.als_iterations), "collaborative: als", unit="iteration"):
        _solve_side(by_user, items, users, config)
        _solve_side(by_item, users, items, config)
    return items[:, :k].astype(np.float32), items[:, k].astype(np.float32)


def _solve_side(chosen: sparse.csr_matrix, other: np.ndarray, out: np.ndarray, config: TrainingConfig) -> None:
    """One half-step of ALS: `out`'s rows [q, b] given the fixed `other` side [q, b], by
    `als_cg_steps` conjugate-gradient steps from their current values, every row at once."""
    z = other.copy()
    z[:, -1] = 1.0
    other_bias = other[:, -1]
    gram = (z.T @ z + config.als_regularization * np.eye(z.shape[1])).astype(z.dtype)
    row_of = np.repeat(np.arange(chosen.shape[0]), np.diff(chosen.indptr))
    extra = chosen.data.astype(z.dtype)  # confidence - 1 per choice

    def times(x: np.ndarray) -> np.ndarray:  # A x for every row: x G + sum_i (c_i - 1)(z_i . x) z_i
        dots = np.empty(len(extra), dtype=z.dtype)
        for start in range(0, len(extra), BLOCK):
            end = start + BLOCK
            dots[start:end] = np.einsum("ij,ij->i", z[chosen.indices[start:end]], x[row_of[start:end]])
        return x @ gram + _with_data(chosen, extra * dots) @ z

    bias = other_bias[chosen.indices]
    target = _with_data(chosen, (1.0 + extra) * (1.0 - bias) + bias) @ z - z.T @ other_bias
    residual = target - times(out)
    direction = residual.copy()
    norm = np.einsum("ij,ij->i", residual, residual)
    for _ in range(config.als_cg_steps):
        product = times(direction)
        step = _ratio(norm, np.einsum("ij,ij->i", direction, product))
        out += step[:, None] * direction
        residual -= step[:, None] * product
        new_norm = np.einsum("ij,ij->i", residual, residual)
        direction = residual + _ratio(new_norm, norm)[:, None] * direction
        norm = new_norm


def _with_data(structure: sparse.csr_matrix, data: np.ndarray) -> sparse.csr_matrix:
    return sparse.csr_matrix((data, structure.indices, structure.indptr), shape=structure.shape)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def new_item_transfer(index: ItemIndex, histories: Histories, at: np.ndarray, config: TrainingConfig) -> Transfer:
    """`Transfer` for every catalog item the model lacks: its nearest by vector among the
    `transfer_candidates` most chosen items the index holds, a block of new items at a time.
    Each block's products with every candidate go through `shortlist` (low precision where
    that is faster); the SHORTLIST x TRANSFER_NEIGHBOURS best are scored again in float32 and
    weighted by `recsys.collaborative.nearest_of`, as a serving process weighs an item
    upserted later."""
    in_model = np.zeros(len(index), dtype=bool)
    in_model[at[at >= 0]] = True
    cold = np.flatnonzero(~in_model)
    candidates = np.flatnonzero(at >= 0)[:config.transfer_candidates]  # model rows, most chosen first
    known = index.vectors_at(at[candidates])
    rows = np.full((len(cold), TRANSFER_NEIGHBOURS), -1, dtype=np.int32)
    weights = np.zeros(rows.shape, dtype=np.float32)
    if not len(cold) or not len(known):
        return Transfer([index.ids[r] for r in cold], rows, weights)
    nearest_known = shortlist(known, SHORTLIST * TRANSFER_NEIGHBOURS)
    step = max(1, 16 * BLOCK // max(len(known), 1))  # new items per product: 64 MB of similarities
    for start in progress(range(0, len(cold), step), "collaborative: transfer", unit="block"):
        vectors = index.vectors_at(cold[start:start + step])
        listed = nearest_known(vectors)  # (m, s) positions in `known`
        exact = np.einsum("md,msd->ms", vectors, known[listed])
        nearest, weight = nearest_of(exact)
        chosen = np.take_along_axis(listed, np.maximum(nearest, 0), 1)
        rows[start:start + len(vectors)] = np.where(nearest >= 0, candidates[chosen], -1)
        weights[start:start + len(vectors)] = weight
    return Transfer([index.ids[r] for r in cold], rows, weights)


def shortlist(known: np.ndarray, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function from vectors (m, d) to the positions of their `size` largest products with
    `known`'s rows (all of them when there are no more), by torch: on cuda when there is one
    (float16), else on the CPU in bfloat16 where that is faster than float32
    (`bfloat16_is_faster`: matrix units, as this machine's AMX), else in float32. The caller
    scores the shortlist again in float32."""
    import torch  # the build job's dependency (export, fine-tuning, EASE)

    size = min(size, len(known))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table = torch.from_numpy(np.ascontiguousarray(known)).to(device)
    if device.type == "cuda":
        typed = table.to(torch.float16)
    else:
        low = table.to(torch.bfloat16)
        typed = low if bfloat16_is_faster(table, low) else table
    dtype = typed.dtype
    log(f"transfer: products on {device.type} in {str(dtype).removeprefix('torch.')}")

    def nearest(vectors: np.ndarray) -> np.ndarray:
        products = torch.from_numpy(np.ascontiguousarray(vectors)).to(device, dtype) @ typed.T
        return torch.topk(products, size, dim=1).indices.cpu().numpy()  # ties in bfloat16: scored again after

    return nearest


def bfloat16_is_faster(table: Any, low: Any) -> bool:
    """Whether a product with the (n, d) float32 tensor `table` takes less time with `low`, its
    bfloat16 copy, on this CPU (timed on up to 1,024 of its rows, each kind twice, the second
    counting)."""
    probe = table[:1024]
    seconds = {}
    for kind, matrix in (("float32", table), ("bfloat16", low), ("float32", table), ("bfloat16", low)):
        began = time.perf_counter()
        probe.to(matrix.dtype) @ matrix.T
        seconds[kind] = time.perf_counter() - began
    return seconds["bfloat16"] < seconds["float32"]


def log(message: str) -> None:
    print(f"collaborative: {message}", file=sys.stderr, flush=True)
