"""The item vectors every request scores against, held in memory as one matrix."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


class ItemIndex:
    """Unit item vectors, categories (for filtering) and popularity, by item id; grows in place.

    `counts` is the evidence of popularity (interactions, decayed or not); `prior` is
    the estimate for an item with no evidence yet (its neighbours' mean count).
    """

    FORMAT = 2  # the .npz layout: 2 added categories

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.categories: list[tuple[str, ...]] = []
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._counts = np.zeros(capacity, dtype=np.float32)
        self._prior = np.zeros(capacity, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self.ids)]

    @property
    def counts(self) -> np.ndarray:
        return self._counts[: len(self.ids)]

    @property
    def popularity_counts(self) -> np.ndarray:
        return np.maximum(self.counts, self._prior[: len(self.ids)])

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self.rows.get(item_id)
        return None if row is None else self._vectors[row]

    def upsert(self, item_id: str, vector: np.ndarray, count: float | None = None,
               categories: Sequence[str] | None = None) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"item {item_id}: vector has shape {vector.shape}, the index holds {self.dim}")
        row = self.rows.get(item_id)
        if row is None:
            row = len(self.ids)
            if row == len(self._vectors):
                self._grow()
            self.ids.append(item_id)
            self.rows[item_id] = row
            self.categories.append(())
        self._vectors[row] = vector
        if count is not None:
            self._counts[row] = count
        if categories is not None:
            self.categories[row] = tuple(categories)

    def set_prior(self, item_id: str) -> None:
        """Give an item the neighbour prior (see `neighbour_count`)."""
        row = self.rows[item_id]
        self._prior[row] = self.neighbour_count(self._vectors[row], exclude=row)

    def neighbour_count(self, vector: np.ndarray, k: int = 10, exclude: int | None = None) -> float:
        """The mean interaction count of the k items nearest a vector: the popularity
        prior of an item nobody has interacted with yet, so it is not ranked as if unwanted."""
        seen = np.flatnonzero(self.counts > 0)
        if exclude is not None:
            seen = seen[seen != exclude]
        if len(seen) == 0:
            return 0.0
        similarity = self.vectors[seen] @ vector
        nearest = seen[np.argpartition(-similarity, min(k, len(seen)) - 1)[:k]]
        return float(self.counts[nearest].mean())

    def extend(self, ids: list[str], vectors: np.ndarray, counts: np.ndarray,
               categories: Sequence[Sequence[str]] | None = None) -> None:
        categories = categories if categories is not None else [()] * len(ids)
        for item_id, vector, count, labels in zip(ids, vectors, counts, categories, strict=True):
            self.upsert(item_id, vector, float(count), labels)

    def _grow(self) -> None:
        capacity = max(1024, 2 * len(self._vectors))
        self._vectors = _resized(self._vectors, (capacity, self.dim))
        self._counts = _resized(self._counts, (capacity,))
        self._prior = _resized(self._prior, (capacity,))

    def to_npz(self, **meta: str | float) -> bytes:
        """Serialise as .npz (no pickle): ids, vectors, counts, categories, plus scalar metadata."""
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.array(self.ids, dtype=str), vectors=self.vectors, counts=self.counts,
                 categories=np.array(["|".join(c) for c in self.categories], dtype=str),
                 **{k: np.array(v) for k, v in meta.items()})
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> tuple[ItemIndex, dict[str, str | float]]:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            vectors = npz["vectors"].astype(np.float32)
            index = cls(vectors.shape[1], capacity=max(1024, int(len(vectors) * 1.25)))
            categories = ([tuple(c for c in str(labels).split("|") if c) for labels in npz["categories"]]
                          if "categories" in npz.files else None)
            index.extend([str(i) for i in npz["ids"]], vectors, npz["counts"], categories)
            meta = {k: npz[k].item() for k in npz.files if k not in ("ids", "vectors", "counts", "categories")}
        return index, meta


def _resized(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    grown = np.zeros(shape, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
