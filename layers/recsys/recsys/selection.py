"""From scores to a list: filters, diversity (MMR) and exploration slots."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from recsys.bloom import BloomFilter
from recsys.catalog import MAX_ATTRIBUTES
from recsys.index import ItemIndex

MAX_FILTER_VALUES = 500
ATTRIBUTE_NAME = re.compile(r"^[^:,]{1,100}$")
# Exploration: an item is fresh while it has been shown at most this often (decayed
# impressions from the live counters; 0 for every item before any exist); explored
# items are drawn from the best-scored fresh ones.
FRESH_MAX_IMPRESSIONS = 20.0
EXPLORE_POOL = 5


@dataclass(frozen=True)
class Filters:
    exclude: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    equals: tuple[tuple[str, str], ...] = ()
    minimum: tuple[tuple[str, float], ...] = ()
    maximum: tuple[tuple[str, float], ...] = ()
    include_consumed: bool = False


def _values(text: str | None, name: str) -> list[str]:
    values = [v.strip() for v in (text or "").split(",") if v.strip()]
    if len(values) > MAX_FILTER_VALUES:
        raise ValueError(f"{name}: at most {MAX_FILTER_VALUES} values")
    return values


def _pairs(text: str | None, name: str) -> list[tuple[str, str]]:
    pairs = []
    for value in _values(text, name):
        key, sep, wanted = value.partition(":")
        if not sep or not ATTRIBUTE_NAME.fullmatch(key.strip()) or not wanted.strip():
            raise ValueError(f"{name}: expected comma-separated name:value, got {value!r}")
        pairs.append((key.strip(), wanted.strip()))
    return pairs


def _bounds(text: str | None, name: str) -> tuple[tuple[str, float], ...]:
    bounds = []
    for key, value in _pairs(text, name):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name}: {key}:{value} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: {key}:{value} is not a finite number")
        bounds.append((key, number))
    return tuple(bounds)


def parse_filters(exclude: str | None = None, categories: str | None = None, exclude_categories: str | None = None,
                  attributes: str | None = None, minimum: str | None = None, maximum: str | None = None,
                  include_consumed: bool = False) -> Filters:
    """The request's filter parameters; raises ValueError naming the bad one. They name at
    most MAX_ATTRIBUTES attributes in all: an item holds no more, so a filter naming more
    matches nothing, and each name costs a pass over the catalog."""
    filters = Filters(frozenset(_values(exclude, "exclude")), frozenset(_values(categories, "categories")),
                      frozenset(_values(exclude_categories, "exclude_categories")),
                      tuple(_pairs(attributes, "attributes")), _bounds(minimum, "min"), _bounds(maximum, "max"),
                      bool(include_consumed))
    names = {name for name, _ in (*filters.equals, *filters.minimum, *filters.maximum)}
    if len(names) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes, min and max name at most {MAX_ATTRIBUTES} attributes in all "
                         f"(an item holds at most {MAX_ATTRIBUTES}), not {len(names)}")
    return filters


def allowed(index: ItemIndex, filters: Filters, consumed: set[str] | frozenset[str] = frozenset(),
            consumed_filter: BloomFilter | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Which items (or which of the candidate `rows`) the filters let through: never a retired
    item; consumed ones only when include_consumed (the ids held exactly, and those a
    profile's Bloom filter of consumed ids holds)."""
    def at(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    mask = at(index.available).copy()
    for skipped in (filters.exclude, () if filters.include_consumed else consumed):
        if skipped:
            left_out = np.array([r for r in map(index.rows.get, skipped) if r is not None], dtype=np.int64)
            mask &= ~np.isin(np.arange(len(index)) if rows is None else rows, left_out)
    if consumed_filter is not None and not filters.include_consumed and len(mask):
        mask &= ~consumed_filter.contains(index.digests() if rows is None else index.digests()[rows])
    if filters.categories:
        mask &= at(index.category_mask(filters.categories))
    if filters.exclude_categories:
        mask &= ~at(index.category_mask(filters.exclude_categories))
    for name, wanted in filters.equals:
        mask &= at(index.attribute(name)[1]) == wanted
    with np.errstate(invalid="ignore"):
        for name, low in filters.minimum:
            mask &= at(index.attribute(name)[0]) >= low
        for name, high in filters.maximum:
            mask &= at(index.attribute(name)[0]) <= high
    return mask


def best(scores: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Rows of the n best allowed scores, best first (ties by row)."""
    allowed = int(np.count_nonzero(mask))
    n = min(n, allowed)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.asarray(scores, dtype=np.float64)
    if allowed < len(mask):  # left-out rows can never be among the n best
        candidates = candidates.copy()
        candidates[~mask] = -np.inf
    top = np.argpartition(candidates, len(candidates) - n)[len(candidates) - n:]
    return top[np.lexsort((top, -candidates[top]))]


def diversify(index: ItemIndex, scores: np.ndarray, candidates: np.ndarray, k: int, diversity: float,
              rows: np.ndarray | None = None) -> np.ndarray:
    """Maximal marginal relevance: each pick maximises (1 - diversity) x relevance -
    diversity x its highest cosine to the items already picked; relevance is the score
    rescaled to [0, 1] over the candidates (positions in `scores`; index rows are
    `rows[position]` when scores are of candidate rows)."""
    if diversity <= 0 or len(candidates) <= 1:
        return candidates[:k]
    relevance = scores[candidates].astype(np.float64)
    spread = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / spread if spread > 0 else np.ones_like(relevance)
    vectors = index.vectors_at(candidates if rows is None else rows[candidates])
    closest = np.zeros(len(candidates))
    taken = np.zeros(len(candidates), dtype=bool)
    picked = []
    for _ in range(min(k, len(candidates))):
        value = (1 - diversity) * relevance - diversity * closest
        value[taken] = -np.inf
        choice = int(np.argmax(value))
        picked.append(choice)
        taken[choice] = True
        closest = np.maximum(closest, vectors @ vectors[choice])
    return candidates[picked]


def explore_slots(k: int, explore: float) -> list[int]:
    """Positions (0-based) given to exploration: round(explore x k) of them, spread over the list."""
    n = min(k, int(round(explore * k)))
    return sorted({min(k - 1, int((i + 0.5) * k / n)) for i in range(n)}) if n else []


def fresh_candidates(index: ItemIndex, scores: np.ndarray, mask: np.ndarray, n: int,
                     rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
    """n fresh items (shown little so far) for exploration: drawn at random among the
    best-scored EXPLORE_POOL x n fresh items the filters allow."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    impressions = index.impressions if rows is None else index.impressions[rows]
    fresh = mask & (impressions <= FRESH_MAX_IMPRESSIONS)
    pool = best(scores, fresh, EXPLORE_POOL * n)
    if len(pool) <= n:
        return pool
    return pool[np.sort(rng.choice(len(pool), size=n, replace=False))]


def select(index: ItemIndex, scores: np.ndarray, mask: np.ndarray, k: int, diversity: float = 0.0,
           explore: float = 0.0, rng: np.random.Generator | None = None,
           rows: np.ndarray | None = None) -> tuple[list[int], set[int]]:
    """The list in order, and which of it was placed by exploration: as positions in `scores`
    and `mask` (index rows, unless they are of the candidate `rows`)."""
    slots = explore_slots(k, explore)
    explored = fresh_candidates(index, scores, mask, len(slots), rng or np.random.default_rng(), rows)
    slots = slots[:len(explored)]
    remaining = mask
    if len(explored):
        remaining = mask.copy()
        remaining[explored] = False
    need = k - len(explored)
    pool = best(scores, remaining, need if diversity <= 0 else max(5 * need, need + 50))
    if not len(explored):
        return diversify(index, scores, pool, need, diversity, rows).tolist(), set()
    ranked = list(diversify(index, scores, pool, need, diversity, rows))
    listed: list[int] = []
    explored_list = list(explored)
    for position in range(len(ranked) + len(explored_list)):
        if position in slots and explored_list:
            listed.append(int(explored_list.pop(0)))
        elif ranked:
            listed.append(int(ranked.pop(0)))
    listed += [int(r) for r in explored_list]
    return listed, {int(r) for r in explored}
