"""Fitting the blend weights on a validation split carved from the training interactions.

The carve (model_build/validation.py) follows shared/eval/split.py's protocol on train
alone: a share of items becomes "new", each user's last 20% in time order is held out,
and the new items' interactions are dropped from the rest; lists rank only the items
train names (`_validation_catalog`). The collaborative models are trained on what is left,
profiles are folded from it with the events function's own code, and lists are ranked
by the API's own code (`recsys.ranking.rank`) under each candidate weighting.
Coordinate ascent: one weight at a time over a few values, up to three passes, keeping
a change only when the objective rises.

Objective: ndcg@10, less COLD_PENALTY x the shortfall of cold_recall@20 below
COLD_FLOOR: the most ranking quality for which new items stay findable. Every slot a
new item takes costs ranking quality (on ml-latest-small's carve a new item placed in
the top 10 was a hit 3% of the time, a known one 12.5%), and the trade-off is close to
linear there (0.4-0.6 ndcg@10 per unit of cold recall between measured points), so a
fixed exchange rate lands at either end: 0.25 dropped new items from every list (cold
recall 0), and at 1.0 every step of cold transfer on the grid raised the objective.
The floor's penalty is steeper than the trade-off, so the fit buys cold recall up to
the floor and no further.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from model_build.progress import progress
from model_build.validation import carve, metrics
from recsys import ranking, scoring
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.profile import Profile, apply_events

COLD_FLOOR = 0.032  # issue #5's cold-start target: twice the best peer's cold recall
COLD_PENALTY = 2.0
CONTEXT_SHARE = 2.5  # as the first hand-set blend had it: context 5 against item-item 2
LIST_LENGTH = 50
SWEEPS = 3
SEARCH: dict[str, Sequence[float]] = {  # the new-item weights first: they decide where the floor is met
    "cold_transfer": (0.0, 1.0, 1.25, 1.5, 1.75, 1.85, 2.0, 2.15, 2.5, 3.0),
    "new_item_popularity": (0.0, 0.1, 0.2, 0.35, 0.5),
    "item_item": (0.0, 0.5, 1.0, 2.0, 4.0),
    "sequence": (0.0, 0.5, 1.0, 2.0, 4.0),
    "factors": (0.0, 0.25, 0.5, 1.0),
    "long_term": (0.1, 0.25, 0.5, 1.0),  # never 0: the only taste of a user the models do not know
    "session": (0.0, 0.35, 0.7, 1.4),
    "popularity": (0.0, 0.05, 0.1, 0.3),
    "recency_half_life": (5.0, 10.0, 20.0, 50.0),
    "recency_floor": (0.1, 0.2, 0.5, 1.0),
}


_SILENT = dict(item_item=0.0, sequence=0.0, factors=0.0, long_term=0.0, session=0.0, popularity=0.0,
               new_item_popularity=0.0)
ALONE: dict[str, dict[str, float]] = {  # each component alone, history recency as fitted
    "popularity alone": {**_SILENT, "popularity": 1.0},
    "item-item alone": {**_SILENT, "item_item": 1.0},
    "sequence alone": {**_SILENT, "sequence": 1.0},
    "matrix factorisation alone": {**_SILENT, "factors": 1.0},
    "long-term content alone": {**_SILENT, "long_term": 1.0},
    "session content alone": {**_SILENT, "session": 1.0},
}


def profiles_from(interactions: Sequence[Interaction], index: ItemIndex) -> dict[str, Profile]:
    """Each user's interactions as the events they are (`Interaction.as_event`), folded in time order by the
    events function's code: negative ones move the vectors away and never enter the collaborative history."""
    events = defaultdict(list)
    for row in interactions:
        events[row.user_id].append(row.as_event())
    profiles = {}
    for user, user_events in events.items():
        profiles[user] = Profile(user_id=user)
        apply_events(profiles[user], user_events, lambda e: index.vector(e.item_id) if e.item_id else None)
    return profiles


def rank(index: ItemIndex, profile: Profile | None, weights: scoring.BlendWeights,
         collaborative: Collaborative | None) -> list[str]:
    """A user's top-50 list, as the recommendations route ranks it (no context, no filters)."""
    ranked = ranking.rank(index, profile, ranking.Request(LIST_LENGTH, now=_now(profile)), weights, collaborative,
                          reasons=False)
    return [item.item_id for item in ranked]


def _now(profile: Profile | None) -> float:
    """Lists are asked for just after the user's last training event."""
    return profile.last_event_at if profile and profile.last_event_at else 0.0


def objective(figures: dict[str, float]) -> float:
    return figures["ndcg@10"] - COLD_PENALTY * max(0.0, COLD_FLOOR - figures["cold_recall@20"])


def fit(interactions: Sequence[Interaction], index: ItemIndex, config: TrainingConfig = TrainingConfig(),
        start: scoring.BlendWeights = scoring.DEFAULT_WEIGHTS,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
        ) -> tuple[scoring.BlendWeights, dict[str, dict[str, float]]]:
    """The best weights found on the validation carve, and validation figures for them
    ("blend") and for each component alone (`ALONE`)."""
    validation = carve(interactions)
    model = train(validation.train, index, config)
    index = _validation_catalog(index, interactions, validation.train)
    collaborative = Collaborative(model, index)
    profiles = profiles_from(validation.train, index)

    cache: dict[tuple[float, float], dict[str, dict[str, np.ndarray]]] = {}

    def score(weights: scoring.BlendWeights) -> dict[str, float]:
        """The recommendations route's ranking (recsys.ranking.rank) under `weights`; the
        components depend on the weights only through the history's recency, so they are
        scored once per recency setting and passed back in."""
        key = (weights.recency_half_life, weights.recency_floor)
        if key not in cache:
            cache.clear()
            cache[key] = {user: ranking.score(index, profiles.get(user), None, _now(profiles.get(user)), weights,
                                              collaborative, every=True).components
                          for user in validation.held_out}
        lists = {}
        for user, parts in cache[key].items():
            profile = profiles.get(user)
            ranked = ranking.rank(index, profile, ranking.Request(LIST_LENGTH, now=_now(profile)), weights,
                                  collaborative, reasons=False, components=parts)
            lists[user] = [item.item_id for item in ranked]
        return metrics(lists, validation.held_out, validation.cold_items)

    best, best_figures = start, score(start)
    log(f"blend: start {best_figures}")
    for sweep in range(SWEEPS):
        improved = False
        candidates = [(name, value) for name, values in SEARCH.items() for value in values]
        for name, value in progress(candidates, f"blend: sweep {sweep + 1}", unit="weighting"):
            if value == getattr(best, name):
                continue
            candidate = replace(best, **{name: value})
            figures = score(candidate)
            if objective(figures) > objective(best_figures) + 1e-5:
                best, best_figures, improved = candidate, figures, True
                log(f"blend: sweep {sweep + 1}, {name}={value}: {figures}")
        if not improved:
            break
    report: dict[str, dict[str, float]] = {"blend": best_figures}
    for name, only in ALONE.items():
        report[name] = score(replace(best, **only))
    return with_context(best), report


def with_context(weights: scoring.BlendWeights) -> scoring.BlendWeights:
    """The context weight is not fitted (validation has no request context): it keeps
    CONTEXT_SHARE x the collaborative weights, so an explicit request steers whatever
    scale the fit gave the collaborative scores."""
    return replace(weights, context=CONTEXT_SHARE * (weights.item_item + weights.sequence + weights.factors))


def _validation_catalog(index: ItemIndex, interactions: Sequence[Interaction],
                        train_rows: Sequence[Interaction]) -> ItemIndex:
    """The items the interactions name, with popularity counted from the validation's training
    rows only (items nobody chose there count 0, as in a published catalog).

    An item the interactions never name is a new item of the test itself: nobody can choose
    it in validation, so kept it would only crowd the lists' new-item slots (on
    ml-latest-small, 487 of the carve's 3,299 items without evidence), which test time
    does not have, and the fit would pay for new items twice over."""
    named = {row.item_id for row in interactions}
    counts: dict[str, int] = defaultdict(int)
    for row in train_rows:
        counts[row.item_id] += 1
    rows = [r for r, item_id in enumerate(index.ids) if item_id in named]
    copy = ItemIndex(index.dim, capacity=max(len(rows), 1))
    copy.extend([index.ids[r] for r in rows], index.vectors[rows],
                np.array([float(counts[index.ids[r]]) for r in rows], dtype=np.float32),
                [index.categories[r] for r in rows])
    return copy
