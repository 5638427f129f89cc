"""How a request is scored: similarity to the profile and context, blended with popularity."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys import popularity as live_popularity
from recsys.index import ItemIndex
from recsys.popularity import DEFAULT_POPULARITY, PopularityConfig
from recsys.profile import DEFAULT_CONFIG, Profile, ProfileConfig, unit


@dataclass(frozen=True)
class BlendWeights:
    long_term: float = 1.0
    session: float = 0.7
    context: float = 1.0
    popularity: float = 0.3
    # A user with no profile vector leans on popularity.
    cold_popularity: float = 1.0


DEFAULT_WEIGHTS = BlendWeights()


def popularity(index: ItemIndex) -> np.ndarray:
    """Popularity counts (live decayed sums, or the snapshot's counts before there are any)
    squashed to [0, 1] on a log scale."""
    counts = np.log1p(index.popularity_counts)
    top = float(counts.max()) if len(counts) else 0.0
    return counts / top if top > 0 else counts


def recommend(index: ItemIndex, profile: Profile | None, context: np.ndarray | None, k: int,
              now: float, weights: BlendWeights = DEFAULT_WEIGHTS,
              config: ProfileConfig = DEFAULT_CONFIG, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
    """The k best items for a user (and optional context vector), consumed ones left out."""
    long_term = unit(profile.long_term) if profile else None
    session = unit(profile.session) if profile and profile.session_active(now, config) else None
    has_taste = long_term is not None or session is not None
    scores = (weights.popularity if has_taste else weights.cold_popularity) * popularity(index)
    for weight, vector in ((weights.long_term, long_term), (weights.session, session),
                           (weights.context, context)):
        if vector is not None:
            scores = scores + weight * (index.vectors @ vector)
    skip = set(exclude) | (profile.consumed if profile else set())
    return top_k(index, scores, k, skip)


def trending(index: ItemIndex, k: int, category: str | None = None,
             config: PopularityConfig = DEFAULT_POPULARITY) -> list[tuple[str, float]]:
    """The k items whose recent pace most exceeds their long-run pace (see
    `popularity.trending`), optionally only those of one category; only items with
    recent evidence qualify."""
    scores = live_popularity.trending(index.counts.astype(np.float64), index.recent.astype(np.float64), config)
    eligible = scores > 0
    if category is not None:
        eligible &= np.array([category in labels for labels in index.categories], dtype=bool)
    rows = np.flatnonzero(eligible)
    best = rows[np.argsort(-scores[rows], kind="stable")[:k]]
    return [(index.ids[r], round(float(scores[r]), 6)) for r in best]


def similar(index: ItemIndex, item_id: str, k: int) -> list[tuple[str, float]]:
    """Items whose vectors are nearest to the given item's (cosine)."""
    vector = index.vector(item_id)
    if vector is None:
        return []
    return top_k(index, index.vectors @ vector, k, {item_id})


def top_k(index: ItemIndex, scores: np.ndarray, k: int, skip: set[str]) -> list[tuple[str, float]]:
    scores = scores.astype(np.float32, copy=True)
    rows = [index.rows[i] for i in skip if i in index.rows]
    scores[rows] = -np.inf
    k = min(k, len(scores) - len(rows))
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(index.ids[r], round(float(scores[r]), 6)) for r in best]
