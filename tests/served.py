"""The served ranking (recsys.ranking.rank) as (item id, score) pairs, for unit tests that
check which items a user gets rather than their reasons."""
from __future__ import annotations

import numpy as np

from recsys import ranking
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.profile import Profile
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights
from recsys.selection import Filters


def served_list(index: ItemIndex, profile: Profile | None, context: np.ndarray | None, k: int, now: float,
                weights: BlendWeights = DEFAULT_WEIGHTS, exclude: set[str] = frozenset(),
                collaborative: Collaborative | None = None) -> list[tuple[str, float]]:
    request = ranking.Request(k, now, context, filters=Filters(exclude=frozenset(exclude)))
    return [(item.item_id, item.score) for item in ranking.rank(index, profile, request, weights, collaborative,
                                                               reasons=False)]
