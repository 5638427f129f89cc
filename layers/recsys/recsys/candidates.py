"""Candidate retrieval over the item vectors: an inverted-file index (IVF), so a request
reads a few thousand items rather than the whole catalog.

The item vectors are split into `lists` clusters by k-means (Lloyd's algorithm on a
sample, then every item assigned to its nearest centroid, in blocks). A query direction
is compared with the centroids, and the items of the `probe` lists whose centroids score
highest are its candidates; ranking scores them exactly (recsys.ranking). The number of
lists is 4 sqrt(n) rounded (the low end of the usual IVF rule, 4 to 16 sqrt(n): a probe
then reads about sqrt(n) / 4 items, and finer lists hold the items nearest a direction in
fewer of them); `probe` (recsys.ranking) is what `make bench-scale` measures the candidate
recall of. At 1M synthetic items, 16 + 8 probes of 4,000 lists gave recall@50 1.0 from
~7,000 candidates, where 16 + 8 probes of 1,000 lists gave 0.975 from ~22,000.

Items added or moved after the build are assigned to their nearest centroid as they come
(`add`); a moved item may also still be listed under its old centroid until the next
build, which costs a re-scored candidate, never a missed one.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

SAMPLE_PER_LIST = 64  # k-means trains on at most this many items per list
ITERATIONS = 8
BLOCK = 16_384  # rows assigned (or scanned) at a time: memory BLOCK x lists floats


LISTS_PER_ROOT = 4


def list_count(n: int) -> int:
    return max(1, int(round(LISTS_PER_ROOT * np.sqrt(n))))


class VectorLists:
    """Centroids (lists, d) and, per list, the item rows in it (CSR: `members` ordered by
    list, `offsets` (lists + 1,)), plus rows added since (`_added`). Stored with the item
    index (recsys.index) as its centroids and each row's list."""

    def __init__(self, centroids: np.ndarray, members: np.ndarray, offsets: np.ndarray) -> None:
        if offsets.shape != (len(centroids) + 1,) or offsets[-1] != len(members):
            raise ValueError(f"vector lists: {len(centroids)} centroids, offsets shaped {offsets.shape}, "
                             f"{len(members)} members")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.members = members.astype(np.int64)
        self.offsets = offsets.astype(np.int64)
        self.size = len(self.members)  # rows 0..size-1 are listed; later ones by `add`
        self._added: dict[int, list[int]] = {}

    @classmethod
    def build(cls, n: int, vectors_at: Callable[[np.ndarray], np.ndarray], seed: int = 0,
              lists: int | None = None) -> VectorLists:
        """k-means lists over the n item vectors (read through `vectors_at(rows)`)."""
        if not n:
            return cls(np.zeros((1, 1), np.float32), np.zeros(0, np.int64), np.zeros(2, np.int64))
        lists = min(n, lists or list_count(n))
        rng = np.random.default_rng(seed)
        points = vectors_at(np.sort(rng.choice(n, size=min(n, SAMPLE_PER_LIST * lists), replace=False)))
        centroids = points[rng.choice(len(points), size=lists, replace=False)].copy()
        for _ in range(ITERATIONS):
            nearest = _nearest(points, centroids)
            sums = np.zeros_like(centroids)
            np.add.at(sums, nearest, points)
            sizes = np.bincount(nearest, minlength=lists)
            empty = sizes == 0  # an empty list restarts at a random sample point
            sums[empty] = points[rng.choice(len(points), size=int(empty.sum()))]
            centroids = _unit(sums)
        assignment = np.concatenate([_nearest(vectors_at(np.arange(start, min(n, start + BLOCK))), centroids)
                                     for start in range(0, n, BLOCK)])
        return cls.from_assignment(centroids, assignment)

    @classmethod
    def from_assignment(cls, centroids: np.ndarray, assignment: np.ndarray) -> VectorLists:
        order = np.argsort(assignment, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(assignment, minlength=len(centroids)))])
        return cls(centroids, order, offsets)

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """List rows added (or whose vectors changed) since the build under their nearest centroid."""
        for row, target in zip(rows.tolist(), _nearest(vectors, self.centroids).tolist(), strict=True):
            self._added.setdefault(int(target), []).append(int(row))
        if len(rows):
            self.size = max(self.size, int(rows.max()) + 1)

    def probe(self, directions: np.ndarray, probe: int) -> np.ndarray:
        """The rows of the `probe` lists nearest to each direction (m, d), as one sorted array."""
        probe = min(probe, len(self.centroids))
        closeness = np.atleast_2d(directions) @ self.centroids.T
        chosen = np.unique(np.argpartition(-closeness, probe - 1, axis=1)[:, :probe])
        starts, ends = self.offsets[chosen], self.offsets[chosen + 1]
        parts = [self.members[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        parts += [np.asarray(self._added[c], dtype=np.int64) for c in chosen.tolist() if c in self._added]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def assignment(self, n: int) -> np.ndarray:
        """(n,) int32: the list of each of the first n rows (the latest one for a row added
        since the build), what a release stores with the centroids."""
        found = np.zeros(n, dtype=np.int32)
        for c in range(len(self.centroids)):
            members = self.members[self.offsets[c]:self.offsets[c + 1]]
            found[members[members < n]] = c
        for c, rows in self._added.items():
            rows_array = np.asarray(rows, dtype=np.int64)
            found[rows_array[rows_array < n]] = c
        return found


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(points @ centroids.T, axis=1) if len(points) else np.zeros(0, np.int64)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
