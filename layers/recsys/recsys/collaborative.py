"""Collaborative filtering: what the people who chose the same items chose.

Three models, trained by the build job (model_build/collaborative.py) and scored here:

- item-item (EASE, Steck 2019): each item's column regressed in closed form on all the
  others; row j holds how much having chosen j raises every other item. Kept sparse,
  the `neighbours` strongest entries per row. A user's scores are the weighted sum of
  the rows of their history.
- sequence: the same shape of sparse rows, from how often two items were chosen close
  together in time (within a window of a user's consecutive choices), normalised like a
  cosine. Where EASE reads whole histories, this reads what goes with what at one time:
  people choose in bursts, and the next choices resemble the last ones.
- matrix factorisation with biases, r_ui = q_u . q_i + b_u + b_i, trained by implicit
  ALS (Hu, Koren, Volinsky 2008). Only the item side is stored: q_u and b_u are solved
  at request time from the user's history (fold-in), so a user the model never saw,
  or one whose last click came a second ago, still gets a factor.

The history the models read is the user's positive choices only (`history_weights`):
a hide, a dislike, a bounce or a rating below the user's tolerance is never one. Each is
weighted by what the user did (view < click < add to cart < purchase, ratings by their
distance from the user's mean) and by recency: recent tastes predict the next choice
better than old ones.

Items with no collaborative evidence (new, or never chosen in training) are scored
through their item vector, by a mix of two estimates of the score they would have (the
mapped one's share is `BlendWeights.cold_mapped_share`, fitted per dataset by the blend fit):
- mapped: the build job regresses each model's item side on the item vectors (ridge),
  so a new item's item-item column and its (q_i, b_i) are predicted from its text. For
  the row models the ridge fit of column scores on vectors V is linear in the rows: a
  history's direction in the vector space is (sum_h w_h sum_j S[h, j] v_j) @ `projection`,
  projection = (V'V + l2 I)^-1, a d x d matrix (so nothing per item beyond the rows); a
  user's mapped scores for new items are their vectors dotted with that direction;
- borrowed: the similarity-weighted mean of the scores of the item's nearest items by
  vector that have evidence (`nearest_of`). The build job computes it once for
  every catalog item the model lacks (`CollaborativeModel.transfer`); a serving process
  computes it only for the items added after the build, one item at a time as they come.
On validation the two were level (the mapped one ranks new items among themselves
better, recall@20 0.175 vs 0.089, but calibrates worse against known items), which is
why the mix is fitted rather than set. A new item's popularity is predicted from its
vector too (`popularity_map`, the ridge fit of log-popularity).

Items with little evidence move smoothly from that path to the model's own score: with an
evidence prior k (`BlendWeights.evidence_prior`, fitted per dataset by the blend fit) an item
chosen by c users in training scores c / (c + k) x its model score + k / (c + k) x its mapped
score (the borrowed one needs neighbours the build computes for items without evidence
only), so an item with no evidence is scored by its vector alone, one with a few
interactions mostly so, and a well-chosen item by the model (k 0: the model's score as is).
The model keeps each item's c (`CollaborativeModel.evidence`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.artifacts import read_npz, write_npz
from recsys.index import ItemIndex
from recsys.profile import Profile

if TYPE_CHECKING:
    from recsys.scoring import BlendWeights

TRANSFER_NEIGHBOURS = 20
TRANSFER_SHARPNESS = 3.0  # neighbour weight = cosine^3: the closest neighbours dominate


class ArtifactMismatch(ValueError):
    """A collaborative artifact that does not fit what reads it."""


@dataclass(frozen=True)
class ItemRows:
    """A sparse item-to-item model: row h lists the items that having chosen h raises
    (`rows`, -1 pads) and by how much (`weights`); `projection` maps the rows' weighted item
    vectors to a direction for items without evidence (see the module's docstring).

    `directions` holds that direction of each row alone, D_h = (sum_k weights[h, k]
    v(rows[h, k])) @ projection, as int8 codes and one scale per row (`direction_scales`,
    as recsys.index stores item vectors): a history's direction is linear in its rows,
    sum_h w_h D_h, so a request reads one row per history item instead of the vectors of
    every item its rows reach (the build job computes them from the catalog's vectors:
    model_build.collaborative_training.row_model)."""

    rows: np.ndarray  # (n, N) int32
    weights: np.ndarray  # (n, N) float32
    projection: np.ndarray  # (d, d) float32
    directions: np.ndarray  # (n, d) int8
    direction_scales: np.ndarray  # (n,) float32

    FIELDS = ("rows", "weights", "projection", "directions", "direction_scales")

    def direction(self, history_rows: np.ndarray, history_weights: np.ndarray) -> np.ndarray:
        """sum_h w_h D_h over the history's model rows: the direction whose dot product with an
        item vector is the item's mapped score (in model units)."""
        scaled = history_weights.astype(np.float32) * self.direction_scales[history_rows]
        return (scaled @ self.directions[history_rows].astype(np.float32)).astype(np.float32)

    def check(self, name: str, n: int) -> None:
        if self.rows.shape != self.weights.shape or self.rows.shape[0] != n:
            raise ArtifactMismatch(f"collaborative model: {n} item ids but {name} arrays shaped "
                                   f"{self.rows.shape}, {self.weights.shape}")
        if self.projection.ndim != 2 or self.projection.shape[0] != self.projection.shape[1]:
            raise ArtifactMismatch(f"collaborative model: {name} projection shaped {self.projection.shape}")
        if self.directions.shape != (n, self.projection.shape[0]) or self.direction_scales.shape != (n,):
            raise ArtifactMismatch(f"collaborative model: {name} directions shaped {self.directions.shape}, "
                                   f"{self.direction_scales.shape}")


@dataclass(frozen=True)
class Transfer:
    """For items without evidence, their nearest items with evidence by vector (`rows`, model
    rows, -1 pads) and the weights (summing to 1) their borrowed scores average with."""

    item_ids: list[str]
    rows: np.ndarray  # (m, TRANSFER_NEIGHBOURS) int32 model rows
    weights: np.ndarray  # (m, TRANSFER_NEIGHBOURS) float32

    FIELDS = ("rows", "weights")

    @classmethod
    def empty(cls) -> Transfer:
        return cls([], np.full((0, TRANSFER_NEIGHBOURS), -1, np.int32), np.zeros((0, TRANSFER_NEIGHBOURS), np.float32))

    def check(self, n: int) -> None:
        if self.rows.shape != (len(self.item_ids), TRANSFER_NEIGHBOURS) or self.weights.shape != self.rows.shape:
            raise ArtifactMismatch(f"collaborative model: {len(self.item_ids)} transfer ids but arrays shaped "
                                   f"{self.rows.shape}, {self.weights.shape}")
        if self.rows.size and (self.rows.max() >= n or self.rows.min() < -1):
            raise ArtifactMismatch("collaborative model: transfer rows out of range")


@dataclass(frozen=True)
class Estimates:
    """One model's scores of a history, over index rows (every row, or the candidates),
    before the mix (`Collaborative._mixed`): the model's own scores of the items with evidence
    (`known`, a mask), and for the items without (`cold`, positions) their borrowed scores and
    their mapped ones (vector . direction + offset, in model units: divide by `scale`); the
    known items' mapped scores are computed when an evidence prior asks (`Collaborative._mixed`).
    Plain arrays only: a closure over the Collaborative would make a reference cycle that keeps
    its model in memory after the last reference goes (until a full garbage collection)."""

    known: np.ndarray
    own: np.ndarray  # over scale
    cold: np.ndarray
    borrowed: np.ndarray  # over scale
    mapped_cold: np.ndarray
    scale: float
    direction: np.ndarray
    offset: float


def nearest_of(similarity: np.ndarray, eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The borrowed estimate's neighbours, from a block's similarities (m, n) to the known items
    (the items with evidence): each row's TRANSFER_NEIGHBOURS most similar `eligible` columns (a
    mask over them; all by default), -1 pads when fewer, and their cos^TRANSFER_SHARPNESS
    weights, summing to 1 (all 0 when no neighbour is similar at all)."""
    rows = np.full((len(similarity), TRANSFER_NEIGHBOURS), -1, dtype=np.int64)
    weights = np.zeros((len(similarity), TRANSFER_NEIGHBOURS), dtype=np.float32)
    n = similarity.shape[1]
    k = min(TRANSFER_NEIGHBOURS, n if eligible is None else int(np.count_nonzero(eligible)))
    if not k or not len(similarity):
        return rows, weights
    if eligible is not None:
        similarity = np.where(eligible[None, :], similarity, -np.inf)
    best = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < n else \
        np.broadcast_to(np.arange(k), similarity.shape)
    strength = np.maximum(np.take_along_axis(similarity, best, 1), 0.0) ** TRANSFER_SHARPNESS
    total = strength.sum(1, keepdims=True)
    rows[:, :k] = best
    weights[:, :k] = np.divide(strength, total, out=np.zeros_like(strength), where=total > 0)
    return rows, weights


@dataclass(frozen=True)
class CollaborativeModel:
    item_ids: list[str]
    item_item: ItemRows  # EASE
    sequence: ItemRows  # chosen close together in time
    factors: np.ndarray  # (n, k) float32 q_i
    biases: np.ndarray  # (n,) float32 b_i
    regularization: float
    alpha: float  # confidence = 1 + alpha * history weight
    factor_map: np.ndarray  # (d, k + 1) float32: an item vector -> its predicted (q_i, b_i)
    popularity_map: np.ndarray  # (d + 1,) float32: [item vector, 1] -> log1p(choosers) / log1p(most choosers)
    transfer: Transfer  # the build's catalog items without evidence, and whom they borrow from
    # (n,) float32: the users who chose each item in training (the evidence prior's c); None in
    # artifacts written before it was kept: the prior is then off.
    evidence: np.ndarray | None = None

    KIND = "collaborative"
    # 2 added the sequence model and the content maps (new items scored from their vectors);
    # 3 replaced the (n, d) content maps by (d, d) projections and stores the new-item transfer;
    # 4 stores each row model's per-row directions (`ItemRows.directions`).
    FORMAT = 4
    ROW_MODELS = ("item_item", "sequence")

    def __post_init__(self) -> None:
        n, d = len(self.item_ids), self.vector_dim
        for name in self.ROW_MODELS:
            getattr(self, name).check(name, n)
        if self.factors.shape[0] != n or self.biases.shape != (n,):
            raise ArtifactMismatch(f"collaborative model: {n} item ids but factors shaped "
                                   f"{self.factors.shape}, biases {self.biases.shape}")
        if self.factor_map.shape != (d, self.factors.shape[1] + 1):
            raise ArtifactMismatch(f"collaborative model: factor map shaped {self.factor_map.shape}, "
                                   f"expected {(d, self.factors.shape[1] + 1)}")
        for name in self.ROW_MODELS:
            if getattr(self, name).projection.shape != (d, d):
                raise ArtifactMismatch(f"collaborative model: {name} projection shaped "
                                       f"{getattr(self, name).projection.shape}, expected {(d, d)}")
        if self.popularity_map.shape != (d + 1,):
            raise ArtifactMismatch(f"collaborative model: popularity map shaped {self.popularity_map.shape}, "
                                   f"expected {(d + 1,)}")
        self.transfer.check(n)
        if self.evidence is not None and self.evidence.shape != (n,):
            raise ArtifactMismatch(f"collaborative model: {n} item ids but evidence shaped {self.evidence.shape}")

    @property
    def dim(self) -> int:
        return self.factors.shape[1]

    @property
    def vector_dim(self) -> int:
        """The dimension of the item vectors the content maps read."""
        return self.factor_map.shape[0]

    def to_npz(self, **meta: str | float) -> bytes:
        """Serialise as .npz (see recsys.artifacts), plus scalar metadata (the fitted blend)."""
        rows = {f"{name}_{field}": getattr(getattr(self, name), field)
                for name in self.ROW_MODELS for field in ItemRows.FIELDS}
        return write_npz(self.KIND, self.FORMAT, {
            "item_ids": np.array(self.item_ids, dtype=str), **rows, "factors": self.factors, "biases": self.biases,
            "regularization": np.array(self.regularization), "alpha": np.array(self.alpha),
            "factor_map": self.factor_map, "popularity_map": self.popularity_map,
            "transfer_item_ids": np.array(self.transfer.item_ids, dtype=str),
            "transfer_rows": self.transfer.rows, "transfer_weights": self.transfer.weights,
            **({} if self.evidence is None else {"evidence": self.evidence})}, meta)

    @classmethod
    def from_npz(cls, data: bytes | Path) -> tuple[CollaborativeModel, dict[str, str | float]]:
        """Raises ArtifactFormatError for a file that is not a collaborative model of this FORMAT. A
        Path is read memory-mapped: the arrays are views of the file (recsys.artifacts)."""
        fields = ["item_ids", "factors", "biases", "regularization", "alpha", "factor_map", "popularity_map",
                  "transfer_item_ids", "transfer_rows", "transfer_weights",
                  *(f"{name}_{field}" for name in cls.ROW_MODELS for field in ItemRows.FIELDS)]
        artifact = read_npz(data, cls.KIND, cls.FORMAT, fields, optional=("evidence",))
        arrays = artifact.arrays
        row_models = {name: ItemRows(np.asarray(arrays[f"{name}_rows"], dtype=np.int32),
                                     np.asarray(arrays[f"{name}_weights"], dtype=np.float32),
                                     np.asarray(arrays[f"{name}_projection"], dtype=np.float32),
                                     np.asarray(arrays[f"{name}_directions"], dtype=np.int8),
                                     np.asarray(arrays[f"{name}_direction_scales"], dtype=np.float32))
                      for name in cls.ROW_MODELS}
        f32 = {name: np.asarray(arrays[name], dtype=np.float32)
               for name in ("factors", "biases", "factor_map", "popularity_map", "transfer_weights")}
        model = cls(arrays["item_ids"].tolist(), row_models["item_item"], row_models["sequence"],
                    f32["factors"], f32["biases"], float(arrays["regularization"]), float(arrays["alpha"]),
                    f32["factor_map"], f32["popularity_map"],
                    Transfer(arrays["transfer_item_ids"].tolist(), np.asarray(arrays["transfer_rows"], dtype=np.int32),
                             f32["transfer_weights"]),
                    np.asarray(arrays["evidence"], dtype=np.float32) if "evidence" in arrays else None)
        return model, artifact.meta


def history_weights(profile: Profile, half_life_items: float, floor: float) -> dict[str, float]:
    """The user's positive choices (`Profile.choices`: never a hidden, disliked or bounced item,
    nor one rated below the user's tolerance), each weighted by its choice weight (event type,
    dwell, rating distance; see recsys.profile) x (floor + 2^(-position / half_life)),
    position 0 the most recent choice."""
    return {item_id: weight * (floor + 0.5 ** (position / half_life_items))
            for position, (item_id, weight) in enumerate(profile.choices())}


class Collaborative:
    """A model's scores in an item index's row order, kept aligned as the index grows."""

    def __init__(self, model: CollaborativeModel, index: ItemIndex) -> None:
        if model.vector_dim != index.dim:
            raise ArtifactMismatch(f"collaborative model reads item vectors of dimension {model.vector_dim}, "
                                   f"the index holds {index.dim}")
        self.model, self.index = model, index
        self._model_row_of = {item_id: row for row, item_id in enumerate(model.item_ids)}
        self._index_row = np.full(len(model.item_ids), -1, dtype=np.int64)  # model row -> index row
        self._model_row_at = np.zeros(0, dtype=np.int64)  # index row -> model row, -1 without evidence
        self._built_transfer = {item_id: row for row, item_id in enumerate(model.transfer.item_ids)}
        self._moments: tuple[np.ndarray, np.ndarray] | None = None  # fold-in's sums over every item, on first use
        self._cold_rows = np.zeros(0, dtype=np.int64)  # index rows the model has no evidence for
        self._cold_at = np.zeros(0, dtype=np.int64)  # index row -> its place in _cold_rows, -1 with evidence
        self._popular_new: tuple[tuple[int, int], np.ndarray] | None = None
        self._reached: dict[str, tuple[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._estimated: dict[str, tuple[tuple, np.ndarray | None, Estimates]] = {}
        self._transfer_rows = np.zeros((0, TRANSFER_NEIGHBOURS), dtype=np.int64)  # their nearest model rows
        self._transfer_weights = np.zeros((0, TRANSFER_NEIGHBOURS), dtype=np.float32)
        self.sync()

    def sync(self) -> None:
        """Align items the index gained since the last call (the live catalog grows). Items
        without evidence borrow as the build computed; only those added since are matched."""
        aligned = len(self._model_row_at)
        if aligned == len(self.index):
            return
        self._reached.clear()
        self._estimated.clear()
        model_rows = np.array([self._model_row_of.get(item_id, -1) for item_id in self.index.ids[aligned:]],
                              dtype=np.int64)
        self._model_row_at = np.concatenate([self._model_row_at, model_rows])
        known = np.flatnonzero(model_rows >= 0)
        self._index_row[model_rows[known]] = aligned + known
        cold = aligned + np.flatnonzero(model_rows < 0)
        places = np.full(len(model_rows), -1, dtype=np.int64)
        places[cold - aligned] = len(self._cold_rows) + np.arange(len(cold))
        if not len(cold):
            self._cold_at = np.concatenate([self._cold_at, places])
            return
        built = np.array([self._built_transfer.get(self.index.ids[row], -1) for row in cold], dtype=np.int64)
        neighbours = np.full((len(cold), TRANSFER_NEIGHBOURS), -1, dtype=np.int64)
        weights = np.zeros((len(cold), TRANSFER_NEIGHBOURS), dtype=np.float32)
        from_build = built >= 0
        neighbours[from_build] = self.model.transfer.rows[built[from_build]]
        weights[from_build] = self.model.transfer.weights[built[from_build]]
        if not from_build.all():
            neighbours[~from_build], weights[~from_build] = self._transfer(cold[~from_build])
        self._cold_rows = np.concatenate([self._cold_rows, cold])
        self._cold_at = np.concatenate([self._cold_at, places])
        self._transfer_rows = np.vstack([self._transfer_rows, neighbours])
        self._transfer_weights = np.vstack([self._transfer_weights, weights])

    def revise(self, rows: list[int]) -> None:
        """Index rows whose vectors changed: the items among them the model has no evidence for
        borrow from the neighbours of their new vectors. (The rows' `ItemRows.directions` keep the
        build's vectors until the next build: a changed item moves its own scores at once, its
        share in other items' directions then.)"""
        self.sync()
        self._reached.clear()
        self._estimated.clear()
        where = np.flatnonzero(np.isin(self._cold_rows, np.asarray(rows, dtype=np.int64)))
        if len(where):
            self._transfer_rows[where], self._transfer_weights[where] = self._transfer(self._cold_rows[where])

    def _transfer(self, rows: np.ndarray, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """`nearest_of` for index rows added after the build: their nearest items with
        evidence among the index's, as model rows; a block of rows per scan of the index
        (memory block x n floats, no float copy of the catalog)."""
        nearest = np.full((len(rows), TRANSFER_NEIGHBOURS), -1, dtype=np.int64)
        weights = np.zeros((len(rows), TRANSFER_NEIGHBOURS), dtype=np.float32)
        eligible = self._model_row_at >= 0
        for start in range(0, len(rows), block):
            part = rows[start:start + block]
            similarity = self.index.dot(self.index.vectors_at(part).T).T
            nearest[start:start + len(part)], weights[start:start + len(part)] = nearest_of(similarity, eligible)
        return np.where(nearest >= 0, self._model_row_at[nearest], -1), weights

    def _history(self, history: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(self._model_row_of[i], w) for i, w in history.items() if i in self._model_row_of]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows, weights = zip(*pairs, strict=True)
        return np.array(rows, dtype=np.int64), np.array(weights, dtype=np.float32)

    def item_item(self, history: dict[str, float], rows: np.ndarray | None = None, mapped_share: float = 0.5,
                  evidence_prior: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
        """The weighted sum of the history's rows of the item-item model, and for items without
        evidence the same predicted from their vectors; both scaled so the known scores peak at 1.
        Of every index row, or of the candidate `rows` only (in their order). `mapped_share` is
        the mapped estimate's share of the prediction, `evidence_prior` the prior that moves items
        with little evidence towards it (see `_mixed`)."""
        return self._mixed(self._estimates("item_item", history, rows), rows, mapped_share, evidence_prior)

    def sequence(self, history: dict[str, float], rows: np.ndarray | None = None, mapped_share: float = 0.5,
                 evidence_prior: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
        """The same as `item_item`, with the sequence model's rows."""
        return self._mixed(self._estimates("sequence", history, rows), rows, mapped_share, evidence_prior)

    def evidence_share(self, evidence_prior: float, rows: np.ndarray | None = None) -> np.ndarray:
        """c / (c + evidence_prior) for each index row (or each of `rows`): the model score's share
        of an item chosen by c users in training; 0 for items without evidence, 1 with no prior
        (or a model without its evidence counts)."""
        self.sync()
        model_rows = self._model_row_at if rows is None else self._model_row_at[rows]
        share = np.zeros(len(model_rows), dtype=np.float64)
        known = model_rows >= 0
        if evidence_prior <= 0 or self.model.evidence is None:
            share[known] = 1.0
        else:
            chosen = self.model.evidence[model_rows[known]].astype(np.float64)
            share[known] = chosen / (chosen + evidence_prior)
        return share

    def reached(self, history: dict[str, float], component: str) -> tuple[np.ndarray, np.ndarray]:
        """The index rows a row model scores for the history (those of the history rows' entries
        that the index holds), and their (unscaled) scores: the collaborative candidates."""
        rows, weights = self._history(history)
        if len(rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        targets, sums, _ = self._reach(component, history)
        at = self._index_row[targets]
        return at[at >= 0], sums[at >= 0]

    def new_item_direction(self, history: dict[str, float], weights: BlendWeights) -> np.ndarray:
        """The direction in vector space along which an item without evidence gains in the
        blend from its predicted collaborative scores: each row model's mapped score as the
        blend weighs it (its direction over the model's scale, x its weight, `cold_transfer` and
        the mapped share; see `_mixed`), the factors' likewise (scaled by the history's items'
        largest score), and predicted popularity. (The borrowed estimate is not linear in the
        vector: a new item near the items a history reaches has a vector near them too.)"""
        share = weights.cold_transfer * weights.cold_mapped_share
        total = weights.new_item_popularity * self.model.popularity_map[:-1]
        for name in CollaborativeModel.ROW_MODELS:
            if getattr(weights, name) and share:
                _, sums, direction = self._reach(name, history)
                top = float(np.abs(sums).max()) if len(sums) else 0.0
                if top > 0:
                    total = total + getattr(weights, name) * share / top * direction
        if weights.factors and share:
            folded = self.fold_in(history)
            if folded is not None:
                user, user_bias = folded
                rows = self._history(history)[0]
                top = float(np.abs(self.model.factors[rows] @ user + self.model.biases[rows] + user_bias).max())
                if top > 0:
                    total = total + weights.factors * share / top * (self.model.factor_map[:, :-1] @ user
                                                                      + self.model.factor_map[:, -1])
        return np.asarray(total, dtype=np.float32)

    def _reach(self, name: str, history: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A row model's scores of the history, sparse (the model rows reached, sorted, and their
        weighted sums), and the direction whose dot product with an item vector is the
        ridge-mapped score: (sums x the reached items' vectors) @ projection, which is the
        history's weighted sum of its rows' `ItemRows.directions` (the build's vectors; model
        items the catalog lacked count as zero vectors, as in training). The last history's
        are kept: a request asks for them for its candidates and again for its scores."""
        self.sync()  # first: a catalog grown since clears what is kept
        key = (name, tuple(history.items()))
        held = self._reached.get(name)
        if held is not None and held[0] == key:
            return held[1]
        model: ItemRows = getattr(self.model, name)
        history_rows, weights = self._history(history)
        neighbours = model.rows[history_rows]
        contribution = weights[:, None] * model.weights[history_rows]
        valid = neighbours >= 0
        targets, inverse = np.unique(neighbours[valid], return_inverse=True)
        if len(targets) and targets[-1] >= len(self.model.item_ids):
            raise ArtifactMismatch(f"collaborative model: {name} rows out of range")
        sums = np.bincount(inverse, weights=contribution[valid], minlength=len(targets))
        found = (targets, sums, model.direction(history_rows, weights))
        self._reached[name] = (key, found)
        return found

    def contributions(self, history: dict[str, float], index_rows: list[int], top: int = 2,
                      component: str = "item_item") -> dict[int, list[tuple[str, float]]]:
        """For each of some index rows, the history items that added most to its score by one
        row model (weight x coefficient, before scaling), largest first."""
        model: ItemRows = getattr(self.model, component)
        rows, weights = self._history(history)
        wanted = {self._model_row_of[self.index.ids[r]]: r for r in index_rows
                  if self.index.ids[r] in self._model_row_of}
        if len(rows) == 0 or not wanted:
            return {}
        neighbours = model.rows[rows]
        hit_history, hit_column = np.nonzero(np.isin(neighbours, np.fromiter(wanted, dtype=np.int64)))
        found: dict[int, list[tuple[str, float]]] = {}
        values = weights[hit_history] * model.weights[rows[hit_history], hit_column]
        for h, target, value in zip(rows[hit_history], neighbours[hit_history, hit_column], values, strict=True):
            if value > 0:
                found.setdefault(wanted[int(target)], []).append((self.model.item_ids[h], float(value)))
        return {row: sorted(pairs, key=lambda p: -p[1])[:top] for row, pairs in found.items()}

    def new_item_popularity(self, rows: np.ndarray | None = None) -> np.ndarray:
        """For each item without evidence, its popularity predicted from its vector, in [0, 1]
        as `scoring.popularity` scales counts (0 for the items with evidence); of every index
        row, or of the candidate `rows`."""
        self.sync()
        weights, intercept = self.model.popularity_map[:-1], self.model.popularity_map[-1]
        if rows is None:
            predicted = np.zeros(len(self.index), dtype=np.float32)
            predicted[self._cold_rows] = np.clip(self._cold_dot(weights) + intercept, 0.0, 1.0)
            return predicted
        predicted = np.zeros(len(rows), dtype=np.float32)
        cold = self._cold_at[rows] >= 0
        predicted[cold] = np.clip(self.index.dot(weights, rows)[cold] + intercept, 0.0, 1.0)
        return predicted

    def new_item_popular(self, n: int) -> np.ndarray:
        """The index rows of the n items without evidence with the largest predicted popularity
        (computed once per catalog size: the prediction depends on the vectors only)."""
        self.sync()
        held = self._popular_new
        if held is None or held[0] != (len(self.index), n):
            predicted = self._cold_dot(self.model.popularity_map[:-1])
            top = min(n, len(predicted))
            best = np.argpartition(-predicted, top - 1)[:top] if top else np.zeros(0, np.int64)
            held = self._popular_new = ((len(self.index), n), self._cold_rows[best])
        return held[1]

    def _cold_dot(self, direction: np.ndarray) -> np.ndarray:
        """The vectors of the items without evidence dotted with a direction; when they are many
        (a large live catalog), over the whole matrix rather than a copy of their rows."""
        if 4 * len(self._cold_rows) < len(self.index):
            return self.index.dot(direction, self._cold_rows)
        return self.index.dot(direction)[self._cold_rows]

    def _factor_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """l2 I + Z'Z and Z'b over every item, Z = [q_i, 1]: summed a block at a time on first use
        (a container whose blend weighs no factors never reads them)."""
        if self._moments is None:
            k, model = self.model.dim, self.model
            gram, bias_moment = model.regularization * np.eye(k + 1), np.zeros(k + 1)
            for start in range(0, len(model.biases), 65_536):
                z = np.hstack([model.factors[start:start + 65_536],
                               np.ones((len(model.biases[start:start + 65_536]), 1), np.float32)]).astype(np.float64)
                gram += z.T @ z
                bias_moment += z.T @ model.biases[start:start + 65_536].astype(np.float64)
            self._moments = (gram, bias_moment)
        return self._moments

    def fold_in(self, history: dict[str, float]) -> tuple[np.ndarray, float] | None:
        """The user's (q_u, b_u) that ALS would solve for, given the item factors."""
        rows, weights = self._history(history)
        if len(rows) == 0:
            return None
        z = np.hstack([self.model.factors[rows], np.ones((len(rows), 1), np.float32)]).astype(np.float64)
        confidence = 1.0 + self.model.alpha * weights.astype(np.float64)
        bias = self.model.biases[rows].astype(np.float64)
        gram, bias_moment = self._factor_moments()
        matrix = gram + (z.T * (confidence - 1.0)) @ z
        target = z.T @ (confidence * (1.0 - bias) + bias) - bias_moment
        solution = np.linalg.solve(matrix, target)
        return solution[:-1].astype(np.float32), float(solution[-1])

    def factors(self, history: dict[str, float], rows: np.ndarray | None = None, mapped_share: float = 0.5,
                evidence_prior: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
        """q_u . q_i + b_u + b_i for every item (or the candidate `rows`), with (q_i, b_i)
        predicted from the vector for items without evidence; scaled so the known scores peak
        at 1: over the whole model, or, with candidates, over the model items among them and
        the ones they borrow from (a full pass over the factors is what candidates avoid)."""
        return self._mixed(self._estimates("factors", history, rows), rows, mapped_share, evidence_prior)

    def _estimates(self, name: str, history: dict[str, float], rows: np.ndarray | None) -> Estimates | None:
        """A model's `Estimates` for the history, of every index row or of `rows`. The last
        history's and rows' are kept per model (by the rows array's identity): the blend fit
        mixes them twice, under two mapped shares and priors."""
        self.sync()  # first: a catalog grown since clears what is kept
        key = (name, tuple(history.items()))
        held = self._estimated.get(name)
        if held is not None and held[0] == key and held[1] is rows:
            return held[2]
        if name == "factors":
            folded = self.fold_in(history)
            if folded is None:
                return None
            user, offset = folded

            def score_of(model_rows: np.ndarray) -> np.ndarray:
                return self.model.factors[model_rows] @ user + self.model.biases[model_rows] + offset

            top = float(np.abs(self.model.factors @ user + self.model.biases + offset).max()) if rows is None else None
            direction = self.model.factor_map @ np.append(user, 1.0).astype(np.float32)  # x -> q(x).q_u + b(x)
        else:
            if not self._history(history)[0].size:
                return None
            targets, sums, direction = self._reach(name, history)
            top, offset = float(np.abs(sums).max()) if len(sums) else 0.0, 0.0
            dense = np.zeros(len(self.model.item_ids), dtype=np.float32)  # the model's scores in model rows
            dense[targets] = sums  # (np.zeros maps zero pages: only those touched cost)

            def score_of(model_rows: np.ndarray) -> np.ndarray:
                return dense[model_rows]

        found = self._estimated_from(score_of, top, direction, offset, rows)
        self._estimated[name] = (key, rows, found)
        return found

    def _estimated_from(self, score_of: Callable[[np.ndarray], np.ndarray], top: float | None, direction: np.ndarray,
                        offset: float, rows: np.ndarray | None) -> Estimates:
        """`Estimates` from the model's scores (`score_of(model rows)`), divided by `top` (None:
        the largest score read, of the model items among `rows` and of those the items
        without evidence among them borrow from), and the mapped direction and offset."""
        model_rows = self._model_row_at if rows is None else self._model_row_at[rows]
        known = model_rows >= 0
        own = score_of(model_rows[known])
        if rows is None:
            cold, at = self._cold_rows, np.arange(len(self._cold_rows))
            mapped = self._cold_dot(direction)
        else:
            positions = self._cold_at[rows]
            cold, at = np.flatnonzero(positions >= 0), positions[positions >= 0]
            mapped = self.index.dot(direction, rows)[cold]  # every candidate's: their vectors are read once a request
        neighbours = self._transfer_rows[at]
        valid = neighbours >= 0
        lent = score_of(neighbours[valid])
        if top is None:
            top = float(max(np.abs(own).max(initial=0.0), np.abs(lent).max(initial=0.0)))
        scale = top if top > 0 else 1.0
        borrowed = np.zeros(neighbours.shape, dtype=np.float32)
        borrowed[valid] = lent / scale
        return Estimates(known, own / scale, cold, (borrowed * self._transfer_weights[at]).sum(1),
                         mapped + offset, scale, direction, offset)

    def _mixed(self, estimates: Estimates | None, rows: np.ndarray | None, mapped_share: float,
               evidence_prior: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Model scores placed in index rows (0 where the model has no such item); and for the
        items without evidence (0 elsewhere) `mapped_share` of their mapped score and the rest
        of their borrowed one. With an `evidence_prior` k, an item with evidence c keeps
        c / (c + k) of its model score and gets k / (c + k) of its mapped score as its predicted
        one (module docstring)."""
        if estimates is None:
            return None
        known = estimates.known
        scores = np.zeros(len(known), dtype=np.float32)
        scores[known] = estimates.own
        predicted = np.zeros(len(known), dtype=np.float32)
        predicted[estimates.cold] = mapped_share * estimates.mapped_cold / estimates.scale \
            + (1.0 - mapped_share) * estimates.borrowed
        if evidence_prior > 0 and self.model.evidence is not None and known.any():
            share = self.evidence_share(evidence_prior, rows)[known]
            scores[known] *= share
            mapped_known = self.index.dot(estimates.direction, rows)[known]  # the candidates' vectors, read once
            predicted[known] = (1.0 - share) * (mapped_known + estimates.offset) / estimates.scale
        return scores, predicted
