"""The item vectors every request scores against, held in memory as one matrix."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys import bloom
from recsys.artifacts import ArtifactFormatError, read_npz, write_npz
from recsys.candidates import VectorLists

# Catalogs up to this many items are scored whole on every request (a scan of 16k vectors
# costs about what gathering and re-scoring candidates does: `make bench-scale`); larger
# ones through candidates (recsys.ranking.candidates, the lists of recsys.candidates).
EXACT_MAX = 16_384


class ItemIndex:
    """Unit item vectors, categories and attributes (for filtering) and popularity, by item id;
    grows in place.

    `counts` is the evidence of popularity: the snapshot's interaction counts until live
    counters replace them (`set_live_counts`), which also bring `recent`, the
    short-half-life sums trending is made of, and `impressions`, how often each item was
    shown lately (zero until live counters exist). An item added after the snapshot gets a
    prior: the mean current count of its nearest neighbours (`set_prior`).

    `available` masks retired items (deleted, or set unavailable) out of every list
    (recsys.selection.allowed, recsys.ranking.similar and trending): a retired item keeps its
    row, so every array aligned with the rows (the collaborative model's, the neighbour
    priors', the live counters') stays aligned, its vector still folds its events into
    profiles, and bringing it back is flipping the bit.
    """

    KIND = "item_index"
    # the .npz layout: 2 added categories, 3 attributes (JSON per item), 4 int8 vectors (codes and
    # scales) and the candidate lists; 3 and 4 are read, 4 is written
    FORMAT = 4
    _FIELDS = ("ids", "codes", "scales", "counts", "categories", "attributes")
    _FIELDS_3 = ("ids", "vectors", "counts", "categories", "attributes")

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.categories: list[tuple[str, ...]] = []
        self.attributes: list[Mapping[str, Any]] = []
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # attribute -> (numbers, values)
        self._names: set[str] | None = None  # the attribute names items hold, computed on first use
        self._absent: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0, dtype=object))  # a name none hold
        self._labelled: dict[str, list[int]] | None = None  # category -> rows
        # Each vector as int8 codes and one scale: v ~ codes x scale (the largest |component| / 127),
        # a quarter of float32's memory; every read of vectors goes through `vector`, `vectors_at`
        # or `dot`. An index read from a file keeps the file's codes memory-mapped (paged in as
        # requests read them, never a second copy) until an upsert writes one.
        self._codes = np.zeros((capacity, dim), dtype=np.int8)
        self._scales = np.zeros(capacity, dtype=np.float32)
        # While the catalog is scored whole (`exhaustive`), the dequantized vectors too: at most
        # EXACT_MAX x 1.5 KB, read by every request's full-catalog products.
        self._dense: np.ndarray | None = None
        # Else the last candidate rows read and their float32 vectors: a request's components all
        # read the same rows (`dot` of several directions), and this dequantizes them once.
        self._gathered: tuple[np.ndarray, np.ndarray] | None = None
        self._counts = np.zeros(capacity, dtype=np.float32)
        self._recent = np.zeros(capacity, dtype=np.float32)
        self._impressions = np.zeros(capacity, dtype=np.float32)
        self._available = np.ones(capacity, dtype=bool)
        self._neighbours: dict[int, np.ndarray] = {}  # row -> rows its prior is the mean count of
        self._digests = np.zeros((0, 2), dtype=np.uint64)  # bloom.digests of the ids, computed on first use
        self.exact_max = EXACT_MAX
        self.lists: VectorLists | None = None  # built on first use (or loaded with the release)
        self._version = 0  # bumped whenever a count (or a prior) changes
        self._cached: dict[str, tuple[int, object]] = {}  # name -> (version, value)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        """Every item's vector, as a new float32 matrix (the build job's view; requests read
        `dot` and `vectors_at`)."""
        return self.vectors_at(slice(0, len(self.ids)))

    @property
    def counts(self) -> np.ndarray:
        return self._counts[: len(self.ids)]

    @property
    def recent(self) -> np.ndarray:
        return self._recent[: len(self.ids)]

    @property
    def impressions(self) -> np.ndarray:
        return self._impressions[: len(self.ids)]

    @property
    def available(self) -> np.ndarray:
        """Which rows may be listed (False: retired)."""
        return self._available[: len(self.ids)]

    @property
    def popularity_counts(self) -> np.ndarray:
        """Counts, raised to the neighbour prior for items that have one."""
        counts = self.counts
        if not self._neighbours:
            return counts
        raised = counts.copy()
        for row, neighbours in self._neighbours.items():
            raised[row] = max(counts[row], float(counts[neighbours].mean()))
        return raised

    def popularity_counts_at(self, rows: np.ndarray) -> np.ndarray:
        """`popularity_counts` at some rows only."""
        counts = self._counts[rows].copy()
        if self._neighbours:
            for at, row in enumerate(rows.tolist()):
                neighbours = self._neighbours.get(row)
                if neighbours is not None:
                    counts[at] = max(counts[at], float(self._counts[neighbours].mean()))
        return counts

    def top_popularity(self) -> float:
        """The largest of `popularity_counts` (0 for an empty index), kept until a count changes."""
        return float(self._memo("top", lambda: float(self.popularity_counts.max()) if len(self) else 0.0))

    def popular(self, n: int) -> np.ndarray:
        """The rows of the n largest `popularity_counts` among listed items, kept until a count changes."""
        def compute() -> np.ndarray:
            counts = np.where(self.available, self.popularity_counts, -np.inf)
            top = min(n, len(counts))
            return np.argpartition(-counts, top - 1)[:top] if top else np.zeros(0, np.int64)
        return np.asarray(self._memo(f"popular:{n}", compute))

    def _memo(self, name: str, compute: Any) -> Any:
        held = self._cached.get(name)
        if held is None or held[0] != self._version:
            held = (self._version, compute())
            self._cached[name] = held
        return held[1]

    def exhaustive(self) -> bool:
        """Whether requests score every item rather than candidates (see EXACT_MAX)."""
        return len(self) <= self.exact_max

    def candidate_lists(self) -> VectorLists:
        """The vector lists candidates are probed from: the release's, or built on first use."""
        if self.lists is None:
            self.lists = VectorLists.build(len(self), self.vectors_at)
        return self.lists

    def vectors_at(self, rows: np.ndarray | slice) -> np.ndarray:
        """The vectors of some rows, float32 (a copy)."""
        dense = self._dequantized()
        if dense is not None:
            return dense[rows]
        # int8 x float32 in one pass (numpy casts as it multiplies: ~4x faster than astype, then scale)
        return np.multiply(self._codes[rows], self._scales[rows][:, None], dtype=np.float32)

    def _candidate_vectors(self, rows: np.ndarray) -> np.ndarray:
        """`vectors_at(rows)`, kept for the next call with the same rows array (by identity)."""
        held = self._gathered
        if held is not None and held[0] is rows:
            return held[1]
        vectors = self.vectors_at(rows)
        self._gathered = (rows, vectors)
        return vectors

    def _dequantized(self) -> np.ndarray | None:
        """The float32 vectors while the catalog is scored whole (built on first use), else None."""
        if not self.exhaustive():
            self._dense = None
            return None
        n = len(self.ids)
        if self._dense is None or len(self._dense) != n:
            self._dense = np.multiply(self._codes[:n], self._scales[:n, None], dtype=np.float32)
        return self._dense

    def dot(self, direction: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Every item's (or some rows') vector dotted with a direction (d,), or with each column
        of directions (d, m); over every item, a block of rows at a time."""
        direction = np.asarray(direction, dtype=np.float32)
        dense = self._dequantized()
        if dense is not None:
            return dense @ direction if rows is None else dense[rows] @ direction
        if rows is not None:
            return self._candidate_vectors(rows) @ direction
        n = len(self.ids)
        found = np.empty((n, *direction.shape[1:]), dtype=np.float32)
        for start in range(0, n, DOT_BLOCK):
            block = slice(start, min(n, start + DOT_BLOCK))
            found[block] = _scaled_rows(self._codes[block].astype(np.float32) @ direction, self._scales[block])
        return found

    def digests(self) -> np.ndarray:
        """(n, 2) `bloom.digests` of every id in row order (what a consumed-items filter is checked with),
        extended as the index grows."""
        if len(self._digests) < len(self.ids):
            self._digests = np.vstack([self._digests, bloom.digests(self.ids[len(self._digests):])])
        return self._digests

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self.rows.get(item_id)
        if row is None:
            return None
        return self._dense[row].copy() if self._dense is not None and row < len(self._dense) else \
            self._codes[row].astype(np.float32) * self._scales[row]

    def upsert(self, item_id: str, vector: np.ndarray, count: float | None = None,
               categories: Sequence[str] | None = None, attributes: Mapping[str, Any] | None = None,
               available: bool | None = None) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"item {item_id}: vector has shape {vector.shape}, the index holds {self.dim}")
        row = self.rows.get(item_id)
        new = row is None
        if row is None:
            row = len(self.ids)
            if row == len(self._codes):
                self._grow()
            self.ids.append(item_id)
            self.rows[item_id] = row
            self._version += 1
            self.categories.append(())
            self.attributes.append({})
            self._columns.clear()
            self._names = None
        codes, scale = quantized(vector[None, :])
        self._gathered = None
        if not self._codes.flags.writeable:  # still the release's memory map: copied now (see from_npz)
            self._codes = _resized(self._codes, (max(len(self._scales), row + 1), self.dim))
        changed = new or not (np.array_equal(self._codes[row], codes[0]) and self._scales[row] == scale[0])
        moved = row in self._neighbours and changed
        self._codes[row], self._scales[row] = codes[0], scale[0]
        if self._dense is not None and row < len(self._dense):
            self._dense[row] = codes[0].astype(np.float32) * scale[0]
        if self.lists is not None and changed:
            self.lists.add(np.array([row]), self.vectors_at(np.array([row])))
        if moved:  # a prior is derived from the vector: follow it
            self.set_prior(item_id)
        if count is not None:
            self._counts[row] = count
            self._version += 1
        self.update(item_id, categories, attributes, available)

    def update(self, item_id: str, categories: Sequence[str] | None = None,
               attributes: Mapping[str, Any] | None = None, available: bool | None = None) -> None:
        """Change what an item is filtered by, and whether it is listed, keeping its vector."""
        row = self.rows[item_id]
        if categories is not None and tuple(categories) != self.categories[row]:
            self.categories[row] = tuple(categories)
            self._labelled = None
        if attributes is not None and dict(attributes) != self.attributes[row]:
            self.attributes[row] = dict(attributes)
            self._columns.clear()
            self._names = None
        if available is not None:
            self._available[row] = available
            self._version += 1

    def category_mask(self, labels: Sequence[str] | frozenset[str]) -> np.ndarray:
        """Items that have any of the categories."""
        if self._labelled is None:
            self._labelled = {}
            for row, item_labels in enumerate(self.categories):
                for label in item_labels:
                    self._labelled.setdefault(label, []).append(row)
        mask = np.zeros(len(self.ids), dtype=bool)
        for label in labels:
            mask[self._labelled.get(label, [])] = True
        return mask

    def attribute(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One attribute over every item: (numbers, NaN where not numeric; values as strings,
        "" where absent), built once until the index changes. A name no item holds is answered
        without caching, so requests naming made-up attributes cannot grow the cache."""
        if name not in self._columns:
            if self._names is None:
                self._names = {key for attributes in self.attributes for key in attributes}
                self._absent = (np.full(len(self.ids), np.nan), np.full(len(self.ids), "", dtype=object))
            if name not in self._names:
                return self._absent  # one shared read-only pair, not two catalog-sized arrays per name
            values = [a.get(name) for a in self.attributes]
            numbers = np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                                for v in values], dtype=np.float64)
            text = np.array(["" if v is None else _as_text(v) for v in values], dtype=object)
            self._columns[name] = (numbers, text)
        return self._columns[name]

    def has_prior(self, item_id: str) -> bool:
        return self.rows.get(item_id) in self._neighbours

    def set_prior(self, item_id: str, k: int = 10) -> None:
        """Let an item nobody has interacted with yet start at the mean count of the k
        nearest items with evidence, so it is not ranked as if unwanted. The neighbours
        are chosen now, and again when `upsert` changes the item's vector; their counts are
        read when popularity is, so the prior follows live counters."""
        row = self.rows[item_id]
        self._version += 1
        seen = np.flatnonzero(self.counts > 0)
        seen = seen[seen != row]
        if len(seen) == 0:
            self._neighbours.pop(row, None)
            return
        similarity = self.dot(self.vectors_at(np.array([row]))[0], seen)
        self._neighbours[row] = seen[np.argpartition(-similarity, min(k, len(seen)) - 1)[:k]]

    def set_live_counts(self, item_ids: Sequence[str], popular: np.ndarray | None, recent: np.ndarray | None,
                        impressions: np.ndarray | None = None) -> None:
        """Live counters replace the counts (unless popular is None: then the snapshot's
        stay) and the impressions: an item they do not name has no evidence now and was
        not shown (items not in the index yet are left out)."""
        n = len(self.ids)
        self._version += 1
        pairs = [(self.rows.get(i), at) for at, i in enumerate(item_ids)]
        rows = np.array([row for row, _ in pairs if row is not None], dtype=np.int64)
        at = np.array([at for row, at in pairs if row is not None], dtype=np.int64)
        for target, values in ((self._counts, popular), (self._recent, recent), (self._impressions, impressions)):
            if values is None:
                continue
            target[:n] = 0.0
            target[rows] = values[at]

    def extend(self, ids: list[str], vectors: np.ndarray, counts: np.ndarray,
               categories: Sequence[Sequence[str]] | None = None,
               attributes: Sequence[Mapping[str, Any] | None] | None = None) -> None:
        categories = categories if categories is not None else [()] * len(ids)
        attributes = attributes if attributes is not None else [None] * len(ids)
        for item_id, vector, count, labels, values in zip(ids, vectors, counts, categories, attributes, strict=True):
            self.upsert(item_id, vector, float(count), labels, values)

    def _grow(self) -> None:
        capacity = max(1024, 2 * len(self._codes))
        self._codes = _resized(self._codes, (capacity, self.dim))
        self._scales = _resized(self._scales, (capacity,))
        self._counts = _resized(self._counts, (capacity,))
        self._recent = _resized(self._recent, (capacity,))
        self._impressions = _resized(self._impressions, (capacity,))
        self._available = _resized(self._available, (capacity,))
        self._available[len(self.ids):] = True

    def to_npz(self, **meta: str | float) -> bytes:
        """Serialise as .npz (see recsys.artifacts): ids, vectors, counts, categories and
        attributes, the candidate lists when the catalog is ranked through them, plus scalar
        metadata."""
        lists = {}
        if not self.exhaustive():
            built = self.candidate_lists()
            lists = {"list_centroids": built.centroids, "list_assignment": built.assignment(len(self))}
        return write_npz(self.KIND, self.FORMAT, {
            "ids": np.array(self.ids, dtype=str), "codes": self._codes[:len(self)], "scales": self._scales[:len(self)],
            "counts": self.counts,
            "categories": np.array(["|".join(c) for c in self.categories], dtype=str),
            "attributes": np.array([json.dumps(a, sort_keys=True) for a in self.attributes], dtype=str),
            **lists}, meta)

    @classmethod
    def from_npz(cls, data: bytes | Path) -> tuple[ItemIndex, dict[str, str | float]]:
        """Raises ArtifactFormatError for a file that is not an item index of this FORMAT, and
        ValueError for one whose arrays disagree (a repeated id, lengths that differ)."""
        try:
            artifact = read_npz(data, cls.KIND, cls.FORMAT, cls._FIELDS, optional=("list_centroids", "list_assignment"))
            arrays = artifact.arrays
            codes, scales = arrays["codes"], arrays["scales"]
        except ArtifactFormatError as error:
            try:  # a release written before int8 vectors: quantized as it loads
                artifact = read_npz(data, cls.KIND, 3, cls._FIELDS_3)
            except ArtifactFormatError:
                raise error from None
            arrays = artifact.arrays
            codes, scales = quantized(arrays["vectors"])
        ids = arrays["ids"].tolist()
        n = len(ids)
        if len(set(ids)) != n or any(len(a) != n for a in (codes, scales, arrays["counts"], arrays["categories"],
                                                           arrays["attributes"])) or codes.ndim != 2:
            raise ValueError("item index: ids repeat, or the arrays' shapes differ")
        index = cls(codes.shape[1], capacity=max(1024, int(n * 1.25)))
        index.ids = ids
        index.rows = {item_id: row for row, item_id in enumerate(index.ids)}
        if isinstance(codes, np.memmap):  # read from a file: served from the map until the first write
            index._codes = np.asarray(codes)  # a plain view of the map (np.memmap's indexing costs per call)
        else:
            index._codes[:n] = codes
        index._scales[:n] = scales
        index._counts[:n] = arrays["counts"]
        labelled: dict[str, tuple[str, ...]] = {"": ()}  # one tuple per distinct set of labels, shared
        index.categories = [labelled.get(labels) or labelled.setdefault(labels, tuple(filter(None, labels.split("|"))))
                            for labels in arrays["categories"].tolist()]
        empty: Mapping[str, Any] = {}
        index.attributes = [json.loads(a) if a != "{}" else empty for a in arrays["attributes"].tolist()]
        if "list_centroids" in arrays and "list_assignment" in arrays:
            index.lists = VectorLists.from_assignment(arrays["list_centroids"].astype(np.float32),
                                                      arrays["list_assignment"].astype(np.int64))
        return index, artifact.meta


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


DOT_BLOCK = 16_384  # rows dequantized at a time by a whole-catalog `dot`


def quantized(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and float32 scales of (n, d) vectors: codes x scale ~ vector, the largest
    |component| of each coded as 127."""
    vectors = np.asarray(vectors, dtype=np.float32)
    top = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors), np.float32)
    scales = (top / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    return np.clip(np.rint(vectors / safe), -127, 127).astype(np.int8), scales


def _scaled_rows(products: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return products * (scales if products.ndim == 1 else scales[:, None])


def _resized(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    grown = np.zeros(shape, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
