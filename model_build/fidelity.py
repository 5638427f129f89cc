"""The int8 encoder's fidelity gate: how close its vectors stay to fp32's, measured as the
recommender uses them.

On held-out catalog texts: the mean cosine between the two models' vectors of each text
(the catalog embedded in batches of 32), and the top-10 overlap of retrieval, a query
embedded alone and matched against the catalog, each model against its own catalog.
Both models run as the functions run the shipped one: through the runtime Encoder.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

MIN_MEAN_COSINE = 0.99
MIN_TOP10_OVERLAP = 0.97
TOP_K = 10
QUERY_COUNT = 300


class Embedder(Protocol):
    """What the gate compares: recsys.encoder.Encoder, or a reference of the same shape."""

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def evenly_spaced(count: int, size: int) -> list[int]:
    """A fixed, evenly spread choice of indices, so every build is checked on the same texts."""
    return list(range(count)) if count <= size else [i * count // size for i in range(size)]


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The mean (1 - cosine) of the rows of a and b."""
    return float(np.mean(1 - row_cosines(a, b)))


def top_k(queries: np.ndarray, catalog: np.ndarray, own_rows: Sequence[int]) -> np.ndarray:
    scores = queries @ catalog.T
    scores[np.arange(len(own_rows)), own_rows] = -np.inf
    return np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]


def check_fidelity(reference: Embedder, candidate: Embedder, held_out: Sequence[str]) -> dict[str, Any]:
    """candidate vs reference on held-out catalog texts, as the recommender uses the vectors: the
    catalog embedded in batches of 32, a query embedded alone and matched against the catalog."""
    catalog_ref, catalog_cand = reference.encode(held_out, 32), candidate.encode(held_out, 32)
    query_rows = evenly_spaced(len(held_out), QUERY_COUNT)
    queries = [held_out[i] for i in query_rows]
    neighbours_ref = top_k(reference.encode(queries, 1), catalog_ref, query_rows)
    neighbours_cand = top_k(candidate.encode(queries, 1), catalog_cand, query_rows)
    overlap = np.mean([len(set(a) & set(b)) / TOP_K for a, b in zip(neighbours_ref, neighbours_cand, strict=True)])
    cosines = row_cosines(catalog_ref, catalog_cand)
    return {
        "held_out_texts": len(held_out),
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
        "queries": len(queries),
        "top10_overlap": round(float(overlap), 4),
    }


def passes(figures: dict[str, Any], min_cosine: float = MIN_MEAN_COSINE,
           min_overlap: float = MIN_TOP10_OVERLAP) -> bool:
    return figures["mean_cosine"] >= min_cosine and figures["top10_overlap"] >= min_overlap
