"""The one ranking path: from (index, profile, context, filters, diversity, explore,
weights) to a ranked list with reasons.

The API's recommendations, the offline evaluation (`make eval`), the blend fit, the
benchmarks and the replay all call `rank`; what the API serves is what every offline
figure measured (tests/unit/test_ranking.py asserts it). The steps:

1. `score`: every score component for every item (recsys.scoring.components) and
   their weighted sum (recsys.scoring.combine);
2. `rank`: the filters' mask (recsys.selection.allowed; consumed items left out unless
   the request keeps them), then exploration slots and diversity (selection.select);
3. the reasons of each item placed (recsys.reasons.explain), with the history items
   behind each collaborative score.

A caller that ranks one user under many weightings (the blend fit) scores the components
once with `score(..., every=True)` and passes `components` back in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from recsys import popularity as live_popularity
from recsys import scoring, selection
from recsys.collaborative import Collaborative, CollaborativeModel, history_weights
from recsys.index import ItemIndex
from recsys.popularity import DEFAULT_POPULARITY, PopularityConfig
from recsys.profile import Profile
from recsys.reasons import explain
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights
from recsys.selection import Filters

NO_FILTERS = Filters()
# Candidate retrieval on a large catalog (`candidates`): lists probed per direction, the items
# each row model contributes, and the most popular (known, and predicted for new items).
# Cost knobs, not fitted to data: `make bench-scale` measures the recall of the exact top 50
# they give at 10k, 100k and 1M items.
PROBE = 16  # for the request's taste direction (long-term, session and context vectors)
PROBE_NEW = 8  # for the direction new items gain along (that, plus their predicted collaborative scores)
CF_CANDIDATES = 1_000
POPULAR = 200


@dataclass(frozen=True)
class Request:
    """What a list is asked for besides the user: its length, the request's context (text
    and its vector), the filters, and the shares of diversity and exploration."""
    k: int
    now: float
    context: np.ndarray | None = None
    context_text: str | None = None
    filters: Filters = NO_FILTERS
    diversity: float = 0.0
    explore: float = 0.0


@dataclass(frozen=True)
class Scores:
    """Each component's score of every item (or of the candidate `rows`, in their order), and
    their blend under `weights`."""
    components: dict[str, np.ndarray]
    blended: np.ndarray
    weights: BlendWeights
    rows: np.ndarray | None = None

    def index_rows(self, positions: list[int]) -> list[int]:
        return list(positions) if self.rows is None else self.rows[positions].tolist()


class RankedItem(NamedTuple):
    row: int
    item_id: str
    score: float
    explored: bool = False
    reasons: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()

    def to_json(self, position: int) -> dict[str, Any]:
        return {"item_id": self.item_id, "position": position, "score": self.score, "explored": self.explored,
                "reasons": list(self.reasons)}


def score(index: ItemIndex, profile: Profile | None, context: np.ndarray | None, now: float,
          weights: BlendWeights = DEFAULT_WEIGHTS, collaborative: Collaborative | None = None,
          every: bool = False, components: dict[str, np.ndarray] | None = None,
          rows: np.ndarray | None = None) -> Scores:
    """Every item's (or the candidate rows') components and blended score; `components` reuses
    ones scored before (with `every`, under the same history recency, of the same rows)."""
    if components is None:
        components = scoring.components(index, profile, context, now, weights, collaborative=collaborative,
                                        every=every, rows=rows)
    return Scores(components, scoring.combine(components, weights), weights, rows)


def candidates(index: ItemIndex, profile: Profile | None, request: Request, weights: BlendWeights = DEFAULT_WEIGHTS,
               collaborative: Collaborative | None = None, also: tuple[BlendWeights, ...] = ()) -> np.ndarray:
    """The rows a large catalog's list is chosen from, sorted: every source of a high blended
    score contributes its best items, and `rank` scores them exactly.
    - the items a row model (item-item, sequence) reaches from the history, its CF_CANDIDATES
      strongest;
    - the items of the PROBE vector lists (recsys.candidates) nearest the request's blended
      taste direction (long-term, session and context vectors under their weights), and of the
      PROBE_NEW lists nearest the direction items without evidence gain along in the blend
      (that taste plus their predicted collaborative scores: `Collaborative.new_item_direction`);
    - the POPULAR most popular items, and the POPULAR items without evidence predicted most
      popular;
    - the history's own items and the excluded ones are not needed: filters leave them out.
    `also`: more weightings whose candidates join these (the blend fit's union: the sources
    they share are read once, and their directions probe the lists together, so a list whose
    centroid ties with a probe's last one to the float's last bit may differ)."""
    found = [index.popular(POPULAR)]
    tastes = scoring.taste_vectors(profile, request.context, request.now)
    lists = index.candidate_lists()
    probes, probes_new, histories, reached_by = [], [], {}, {}
    for each in (weights, *also):
        combined = sum((getattr(each, name) * vector for name, vector in tastes.items()),
                       np.zeros(index.dim, np.float32))
        if np.any(combined):
            probes.append(combined)
        if collaborative is None or profile is None:
            continue
        recency = (each.recency_half_life, each.recency_floor)
        if recency not in histories:  # the weightings the fit unions share one
            histories[recency] = history_weights(profile, *recency)
        history = histories[recency]
        if not history:
            continue
        for name in CollaborativeModel.ROW_MODELS:
            if getattr(each, name) and (name, recency) not in reached_by:
                reached, strength = collaborative.reached(history, name)
                strongest = min(CF_CANDIDATES, len(reached))
                reached_by[name, recency] = \
                    reached[np.argpartition(-strength, strongest - 1)[:strongest]] if strongest else reached
        new_items = combined + collaborative.new_item_direction(history, each)
        if np.any(new_items != combined):
            probes_new.append(new_items)
    if collaborative is not None:
        found.append(collaborative.new_item_popular(POPULAR))
    found += list(reached_by.values())
    if probes:
        found.append(lists.probe(np.stack(probes), PROBE))
    if probes_new:
        found.append(lists.probe(np.stack(probes_new), PROBE_NEW))
    return np.unique(np.concatenate(found).astype(np.int64))


def rank(index: ItemIndex, profile: Profile | None, request: Request, weights: BlendWeights = DEFAULT_WEIGHTS,
         collaborative: Collaborative | None = None, rng: np.random.Generator | None = None,
         reasons: bool = True, components: dict[str, np.ndarray] | None = None,
         rows: np.ndarray | None = None) -> list[RankedItem]:
    """The user's list for the request, best first, each item with its reasons (unless
    `reasons` is False: the offline evaluation needs only the order). A catalog larger than
    `index.exact_max` is ranked among its `candidates`; passed-in `components` are of every
    item, or of the passed-in `rows` (the list is then chosen among those)."""
    if rows is None and components is None and not index.exhaustive():
        rows = candidates(index, profile, request, weights, collaborative)
    scores = score(index, profile, request.context, request.now, weights, collaborative, components=components,
                   rows=rows)
    mask = selection.allowed(index, request.filters, profile.consumed if profile else frozenset(),
                             profile.consumed_filter if profile else None, rows)
    positions, explored = selection.select(index, scores.blended, mask, request.k, request.diversity,
                                           request.explore, rng, rows)
    return placed(index, profile, scores, positions, explored, collaborative, request.context_text, reasons)


def order(index: ItemIndex, profile: Profile | None, item_ids: list[str], request: Request,
          weights: BlendWeights = DEFAULT_WEIGHTS,
          collaborative: Collaborative | None = None) -> tuple[list[RankedItem], list[str], list[str]]:
    """The given items in the user's order, with reasons (consumed ones too, no filters:
    the caller chose the list), the ids the index does not know, and the retired ones
    (left out of the list)."""
    wanted = list(dict.fromkeys(item_ids))
    unknown = [i for i in wanted if i not in index.rows]
    retired = [i for i in wanted if i in index.rows and not index.available[index.rows[i]]]
    rows = np.array([index.rows[i] for i in wanted if i in index.rows and index.available[index.rows[i]]],
                    dtype=np.int64)
    scores = score(index, profile, request.context, request.now, weights, collaborative, rows=rows)
    positions = sorted(range(len(rows)), key=lambda p: -float(scores.blended[p]))
    return placed(index, profile, scores, positions, set(), collaborative, request.context_text), unknown, retired


def placed(index: ItemIndex, profile: Profile | None, scores: Scores, positions: list[int], explored: set[int],
           collaborative: Collaborative | None, context_text: str | None = None,
           reasons: bool = True) -> list[RankedItem]:
    """The list's positions in `scores` (and the explored ones) as ranked items, with the reasons of each."""
    rows = scores.index_rows(positions)
    explored_rows = set(scores.index_rows(sorted(explored)))
    values = np.round(scores.blended[positions], 6).tolist() if positions else []
    if not reasons:
        return [RankedItem(r, index.ids[r], value, r in explored_rows) for r, value in zip(rows, values, strict=True)]
    history = {}  # per row model, the history items behind each row's score
    if collaborative is not None and profile is not None:
        recency = history_weights(profile, scores.weights.recency_half_life, scores.weights.recency_floor)
        history = {name: collaborative.contributions(recency, rows, component=name)
                   for name in CollaborativeModel.ROW_MODELS if name in scores.components}
    parts = {name: values_of[positions] for name, values_of in scores.components.items()}
    why = explain(index, parts, scores.weights, rows, explored_rows, history, context_text)
    return [RankedItem(r, index.ids[r], value, r in explored_rows, reasons)
            for r, value, reasons in zip(rows, values, why, strict=True)]


def similar(index: ItemIndex, item_id: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]] | None:
    """The k items nearest (cosine) to an item that the filters allow; None for an item the
    index does not hold or that is retired."""
    vector = index.vector(item_id)
    if vector is None or not index.available[index.rows[item_id]]:
        return None
    rows = None if index.exhaustive() else index.candidate_lists().probe(vector[None, :], PROBE)
    cosines = index.dot(vector, rows)
    mask = selection.allowed(index, filters, rows=rows)
    mask &= (np.arange(len(index)) if rows is None else rows) != index.rows[item_id]
    best = selection.best(cosines, mask, k)
    listed = best if rows is None else rows[best]
    return [(index.ids[r], round(float(c), 6)) for r, c in zip(listed.tolist(), cosines[best].tolist(), strict=True)]


def trending(index: ItemIndex, k: int, category: str | None = None,
             config: PopularityConfig = DEFAULT_POPULARITY) -> list[tuple[str, float]]:
    """The k items whose recent pace most exceeds their long-run pace (see
    `popularity.trending`), optionally only those of one category; only items with
    recent evidence qualify, and no retired item."""
    scores = live_popularity.trending(index.counts.astype(np.float64), index.recent.astype(np.float64), config)
    eligible = (scores > 0) & index.available
    if category is not None:
        eligible &= np.array([category in labels for labels in index.categories], dtype=bool)
    rows = np.flatnonzero(eligible)
    best = rows[np.argsort(-scores[rows], kind="stable")[:k]]
    return [(index.ids[r], round(float(scores[r]), 6)) for r in best]
