"""Fitting the blend weights on a validation split carved from the training interactions.

The carve (model_build/validation.py) follows shared/eval/split.py's protocol on train
alone: a share of items becomes "new", each user's last 20% in time order is held out,
and the new items' interactions are dropped from the rest; lists rank only the items
train names (`_validation_catalog`). The collaborative models are trained on what is left,
profiles are folded from it with the events function's own code, and lists are ranked
by the API's own code (`recsys.ranking.rank`) under each candidate weighting, for at most
FIT_USERS held-out users (a hashed sample beyond that) and, on a catalog too large to score
whole, among the candidates the API's candidate stage retrieves (`Validation.candidate_rows`).
Training settings are tried on the same carve, catalog and profiles (`Validation.retrained`),
retraining only the part each one shapes (`Parts`).
Coordinate ascent: one weight at a time over a few values, up to three passes, keeping
a change only when the fit's rule prefers it.

The rule: maximise ndcg@10 subject to cold_recall@20 >= the floor, where the floor is
measured in the same fit, on the same carve and lists: the largest cold_recall@20 of the
rankings by one signal alone (`ALONE`: content only, i.e. the profile's long-term vector,
the mean of the user's history vectors, which the team's "encoder alone" peer is; each
collaborative model alone, with its own new-item path; popularity, which finds no new
item), under the candidate's history recency. New items are never found worse than by
any one of the blend's signals on its own. Nothing in the rule is a figure of one
dataset: no floor, no exchange rate between the two metrics.

A feasible weighting (meeting the floor) beats an infeasible one; two feasible ones are
compared by ndcg@10, two infeasible ones by cold_recall@20 (so an ascent that starts below
the floor climbs towards it first). Then, since an ndcg@10 difference smaller than its
standard error over the carve's users is noise, a second ascent from that best weighting
takes the most cold_recall@20 among feasible weightings whose ndcg@10 is within one
standard error of it (the error measured on the same lists: `ndcg@10_se`); it starts from
the fit's start instead when that already is such a weighting with more new items. Both margins
are the data's own: the floor from its signals, the tolerance from its users' spread.

If no weighting the ascent reaches meets the floor,
the fit says so (log and `FitResult.floor_met`) and returns the signal-alone weighting
that sets the floor: it meets it by definition, and the fit never returns a blend below it.
"""
from __future__ import annotations

import copy
import math
import pickle
import sys
import tempfile
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from model_build.collaborative_training import Parts, TrainingConfig, train
from model_build.data import Interaction
from model_build.progress import progress
from model_build.validation import carve, metrics, stable_hash
from recsys import ranking, scoring
from recsys.collaborative import Collaborative, history_weights
from recsys.index import ItemIndex
from recsys.profile import Profile, apply_events

CONTEXT_SHARE = 2.5  # a product choice, not the data's: see `with_context`
LIST_LENGTH = 50  # as long as the lists the API serves and score.py reads
SWEEPS = 3
# The fit scores at most this many of the carve's held-out users (a sample chosen by a hash of
# their ids: `sampled`): a bound on its cost, which grows linearly with the users scored, not a
# figure of any dataset (ml-latest-small's carve holds out 610, all scored). The sample's
# spread shows in ndcg@10_se, which the rule already takes as its tolerance.
FIT_USERS = 2_000
# The users' components kept in memory across history-recency settings (`fit`'s cache): a bound
# on the fit's memory, not a figure of any dataset (on ml-latest-small one setting is ~240 MB, on
# the 1M-item synthetic set ~750 MB). Settings beyond it wait on disk (`Spill`), not scored again.
CACHE_BYTES = 2 * 1024 ** 3
# The grids span each weight's range on every dataset: each component is scaled to peak at 1
# (collaborative scores by their largest, cosines and popularity in [0, 1]), so a weight is a
# ratio between components, and the grids run from off to several times the collaborative
# weights, roughly geometric. The new-item weights come first: they decide where the floor is met.
SEARCH: dict[str, Sequence[float]] = {
    "cold_transfer": (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0),
    "cold_mapped_share": (0.0, 0.25, 0.5, 0.75, 1.0),
    "evidence_prior": (0.0, 1.0, 3.0, 10.0, 30.0, 100.0),  # in users who chose the item: off to most items
    "new_item_popularity": (0.0, 0.1, 0.2, 0.35, 0.5),
    "item_item": (0.0, 0.5, 1.0, 2.0, 4.0),
    "sequence": (0.0, 0.5, 1.0, 2.0, 4.0),
    "factors": (0.0, 0.25, 0.5, 1.0),
    "long_term": (0.1, 0.25, 0.5, 1.0),  # never 0: the only taste of a user the models do not know
    "session": (0.0, 0.35, 0.7, 1.4),
    "popularity": (0.0, 0.05, 0.1, 0.3),
    "recency_half_life": (5.0, 10.0, 20.0, 50.0),  # in choices
    "recency_floor": (0.1, 0.2, 0.5, 1.0),
}

# Training settings (issue #11 item 1), chosen on the carve of the data at hand. Each value
# retrains the carve's models and scores every user again (a minute on ml-latest-small's
# carve), so they are searched in the second ascent only, one geometric step of
# TRAINING_STEP either way from the setting at hand, and only a setting that shapes a
# component the fitted weights use: the sequence window if the sequence model is weighted,
# EASE's penalty if item-item is, the ridge maps' penalty if new items (or, under the
# evidence prior, items with little evidence) are scored from their mapped estimate, the ALS
# penalty if matrix factorisation is weighted.
TRAINING_STEP = 3.0
TRAINING_SEARCH: dict[str, Callable[[scoring.BlendWeights], bool]] = {
    "sequence_window": lambda w: w.sequence > 0,
    "ease_l2": lambda w: w.item_item > 0,
    "content_map_l2": lambda w: w.cold_transfer > 0 and (w.cold_mapped_share > 0 or w.evidence_prior > 0),
    "als_regularization": lambda w: w.factors > 0,
}
RECENCY = ("recency_half_life", "recency_floor")  # the weights whose change scores every user again
# One user's scored components per recency setting: the rows they are of (None: every item),
# the components with the borrowed new-item estimate, and the mapped estimate's.
Scored = tuple[np.ndarray | None, dict[str, np.ndarray], dict[str, np.ndarray]]


_SILENT = dict(item_item=0.0, sequence=0.0, factors=0.0, long_term=0.0, session=0.0, popularity=0.0,
               new_item_popularity=0.0)
# A collaborative model alone ranks every item by its own score, a new item's predicted one
# at face value: its own prediction, counted once (cold_transfer 1), the two estimates
# level (cold_mapped_share 0.5), its own score for every item it knows (no evidence prior),
# whatever weights the blend is trying.
_FACE_VALUE = dict(cold_transfer=1.0, cold_mapped_share=0.5, evidence_prior=0.0)
CONTENT_ONLY = "long-term content alone"
ALONE: dict[str, dict[str, float]] = {  # each signal alone, history recency as the candidate's
    "popularity alone": {**_SILENT, "popularity": 1.0},
    "item-item alone": {**_SILENT, **_FACE_VALUE, "item_item": 1.0},
    "sequence alone": {**_SILENT, **_FACE_VALUE, "sequence": 1.0},
    "matrix factorisation alone": {**_SILENT, **_FACE_VALUE, "factors": 1.0},
    CONTENT_ONLY: {**_SILENT, "long_term": 1.0},
    "session content alone": {**_SILENT, "session": 1.0},
}


@dataclass(frozen=True)
class FitResult:
    """The fitted weights; validation figures of the blend ("blend") and of each signal alone
    (`ALONE`, under the fitted history recency); the floor the blend was held to (the largest
    cold_recall@20 among those alone, `floor_from` the one that set it), and whether the blend
    met it (False: no weighting reached met it and `weights` is `floor_from`'s own weighting)."""
    weights: scoring.BlendWeights
    validation: dict[str, dict[str, float]]
    floor: float
    floor_from: str
    floor_met: bool
    config: TrainingConfig = TrainingConfig()  # the training settings chosen with the weights


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


def preferred(figures: dict[str, float], floor: float, than: dict[str, float], than_floor: float) -> bool:
    """The fit's rule (module docstring): is a weighting with `figures` (held to `floor`) better
    than one with `than` (held to `than_floor`)?"""
    feasible, was_feasible = figures["cold_recall@20"] >= floor, than["cold_recall@20"] >= than_floor
    if feasible != was_feasible:
        return feasible
    metric = "ndcg@10" if feasible else "cold_recall@20"
    return figures[metric] > than[metric] + 1e-5


def improves_on(figures: dict[str, float], floor: float, than: dict[str, float], than_floor: float) -> bool:
    """Does a finished blend (`figures`, held to its own `floor`) improve on a finished one
    (`than`, held to `than_floor`)? What an encoder is chosen by (model_build/encoder_choice.py).
    One meeting its floor beats one that does not (two that do not: more cold_recall@20). Of
    two that do, it improves when it loses neither ndcg@10 nor cold_recall@20 and gains on one,
    or when it gains more than `than`'s standard error of ndcg@10, as the first ascent would
    take it. Not the second ascent's trade: each blend already took new items at up to one
    standard error of its own best ndcg@10, and trading another error between the two blends
    would leave the chosen one up to two errors below the best either found."""
    feasible, was_feasible = figures["cold_recall@20"] >= floor, than["cold_recall@20"] >= than_floor
    if feasible != was_feasible or not feasible:
        return preferred(figures, floor, than, than_floor)
    ndcg_gain = figures["ndcg@10"] - than["ndcg@10"]
    cold_gain = figures["cold_recall@20"] - than["cold_recall@20"]
    if ndcg_gain > than["ndcg@10_se"]:
        return True
    return ndcg_gain >= -1e-5 and cold_gain >= -1e-5 and (ndcg_gain > 1e-5 or cold_gain > 1e-5)


class Validation:
    """The carve of `interactions`, the collaborative models trained on its training side with
    `index`'s vectors, the profiles folded from it, and the validation figures of any weighting
    (`score`), of each signal alone (`alone`) and the floor they set (`floor`), all by the
    recommendations route's code, over `users`: the carve's held-out users, or a seeded sample
    of FIT_USERS of them. `parts`: models trained before on the same carve, reused where
    `config` agrees (`collaborative_training.Parts`)."""

    def __init__(self, interactions: Sequence[Interaction], index: ItemIndex,
                 config: TrainingConfig = TrainingConfig(), parts: Parts | None = None) -> None:
        self.carve = carve(interactions)
        if not self.carve.held_out:
            raise ValueError("blend fit: the validation carve holds out nobody (every user has one interaction)")
        self.users = sampled(self.carve.held_out, FIT_USERS)
        self.index = _validation_catalog(index, interactions, self.carve.train)
        self.profiles = profiles_from([row for row in self.carve.train if row.user_id in self.users], self.index)
        # Trained on the validation catalog: the same vectors as `index`'s, and new-item
        # transfer only for the items the carve names (not for those no interaction names).
        self.collaborative = Collaborative(train(self.carve.train, self.index, config, parts), self.index)
        self._forget()

    def retrained(self, config: TrainingConfig, parts: Parts | None = None) -> Validation:
        """The same carve, users, catalog and profiles, with the models trained under `config`
        (a trial of training settings: only the models change, so nothing else is redone)."""
        trial = copy.copy(self)
        trial.collaborative = Collaborative(train(self.carve.train, self.index, config, parts), self.index)
        trial._forget()
        return trial

    def set_aside(self) -> None:
        """Move the users' components held in memory to disk (`Spill`), where `components` reads
        them back: while a trial trains (EASE's two dense matrices), they would only add to the
        peak (~1.5 GB at 1M items)."""
        while self._components:
            self._spill.put(*self._components.popitem(last=False))

    def _forget(self) -> None:
        """Drop every figure scored with the models held before."""
        self._components: OrderedDict[tuple[float, float], dict[str, Scored]] = OrderedDict()
        self._spill = Spill()
        self._alone: dict[tuple[float, float], dict[str, dict[str, float]]] = {}
        self._share_cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}

    def components(self, weights: scoring.BlendWeights, user: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The user's components under `weights`, of every item or of the rows returned with
        them (a catalog larger than the index's exact_max: `candidate_rows`). They depend on
        the weights only through the history's recency, the new-item mix and the evidence prior,
        and per item linearly on the mix and on the prior's share c / (c + k): per recency
        setting they are scored once with the borrowed estimate alone and no prior
        (`cold_mapped_share` 0, `evidence_prior` 0: the models' own scores) and once with the
        mapped one alone and an infinite prior (every item at its mapped score), and any mix and
        prior is a mix of the two."""
        cache = self._components
        key = (weights.recency_half_life, weights.recency_floor)
        if key in cache:
            cache.move_to_end(key)
        else:
            # Scoring every user again is most of the fit's time, and each sweep comes back to
            # the same few settings: as many are kept in memory as fit in CACHE_BYTES (two at
            # least: the best weighting's and the candidate's), the least recently used written
            # to disk first, and read back when a sweep returns to it.
            while cache and len(cache) >= max(2, CACHE_BYTES // _nbytes(next(iter(cache.values())))):
                self._spill.put(*cache.popitem(last=False))
            if key in self._spill:
                cache[key] = self._spill.get(key)
        if key not in cache:
            cache[key] = {}
            for held in progress(self.users, "blend: scoring users", unit="user"):
                profile = self.profiles.get(held)
                now = _now(profile)
                rows = None if self.index.exhaustive() else self.candidate_rows(profile, weights)
                borrowed = ranking.score(self.index, profile, None, now,
                                         replace(weights, cold_mapped_share=0.0, evidence_prior=0.0),
                                         self.collaborative, every=True, rows=rows).components
                history = history_weights(profile, weights.recency_half_life, weights.recency_floor) \
                    if profile else {}
                mapped = scoring.collaborative_parts(self.collaborative, history, list(scoring.COLLABORATIVE), rows,
                                                     1.0, math.inf) if history else {}
                cache[key][held] = rows, borrowed, {n: v for n, v in mapped.items() if n.endswith("_cold")}
        rows, borrowed, mapped = cache[key][user]
        model_share, mapped_share = self._shares(weights)
        if rows is not None:
            model_share, mapped_share = model_share[rows], mapped_share[rows]
        found = dict(borrowed)
        for cold, v in mapped.items():
            name = cold.removesuffix("_cold")
            found[name] = model_share * borrowed[name]
            found[cold] = mapped_share * v + (1.0 - weights.cold_mapped_share) * borrowed[cold]
        return found, rows

    def candidate_rows(self, profile: Profile | None, weights: scoring.BlendWeights) -> np.ndarray:
        """The rows the API's candidate stage (`ranking.candidates`) retrieves for the user under
        `weights` and under each signal alone (`ALONE`) at its history recency: the items any
        weighting the fit tries can rank high. The fit's lists are chosen among them."""
        request = ranking.Request(LIST_LENGTH, now=_now(profile))
        return ranking.candidates(self.index, profile, request, weights, self.collaborative,
                                  also=tuple(replace(weights, **only) for only in ALONE.values()))

    def _shares(self, weights: scoring.BlendWeights) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the model score's share c / (c + k) (0 for items without evidence), and the
        mapped estimate's: k / (c + k) for items with evidence, `cold_mapped_share` without."""
        key = (weights.evidence_prior, weights.cold_mapped_share)
        if key not in self._share_cache:
            model = self.collaborative.evidence_share(weights.evidence_prior)
            known = self.collaborative.evidence_share(0.0) > 0
            self._share_cache[key] = (model.astype(np.float32),
                                      np.where(known, 1.0 - model, weights.cold_mapped_share).astype(np.float32))
        return self._share_cache[key]

    def score(self, weights: scoring.BlendWeights) -> dict[str, float]:
        """The recommendations route's ranking (recsys.ranking.rank) under `weights`, each
        user's components passed in (`components`)."""
        lists = {}
        for user in self.users:
            profile = self.profiles.get(user)
            components, rows = self.components(weights, user)
            ranked = ranking.rank(self.index, profile, ranking.Request(LIST_LENGTH, now=_now(profile)), weights,
                                  self.collaborative, reasons=False, components=components, rows=rows)
            lists[user] = [item.item_id for item in ranked]
        return metrics(lists, self.users, self.carve.cold_items)

    def score_once(self, weights: scoring.BlendWeights) -> dict[str, float]:
        """`score` in one scoring pass of the weighted components only, nothing kept: what a
        trial of training settings costs (about half a `score` at a recency not seen yet)."""
        lists = {}
        for user in progress(self.users, "blend: scoring users once", unit="user"):
            profile = self.profiles.get(user)
            ranked = ranking.rank(self.index, profile, ranking.Request(LIST_LENGTH, now=_now(profile)), weights,
                                  self.collaborative, reasons=False)
            lists[user] = [item.item_id for item in ranked]
        return metrics(lists, self.users, self.carve.cold_items)

    def alone(self, weights: scoring.BlendWeights) -> dict[str, dict[str, float]]:
        """Each signal alone under the weights' history recency."""
        key = (weights.recency_half_life, weights.recency_floor)
        if key not in self._alone:
            self._alone[key] = {name: self.score(replace(weights, **only)) for name, only in ALONE.items()}
        return self._alone[key]

    def floor(self, weights: scoring.BlendWeights) -> tuple[float, str]:
        """The largest cold_recall@20 of a signal alone, and that signal's name."""
        alone = self.alone(weights)
        name = max(alone, key=lambda n: (alone[n]["cold_recall@20"], n == CONTENT_ONLY))
        return alone[name]["cold_recall@20"], name


Rule = Callable[[dict[str, float], float, dict[str, float], float], bool]


def ascent(validation: Validation, best: scoring.BlendWeights, better: Rule, phase: str,
           over: dict[str, Sequence[float]],
           log: Callable[[str], None]) -> tuple[scoring.BlendWeights, dict[str, float]]:
    """Coordinate ascent on `validation` from `best`: one weight of `over` at a time, up to SWEEPS
    passes, a change kept when `better` (figures, floor, best's figures, best's floor) holds."""
    best_figures, best_floor = validation.score(best), validation.floor(best)[0]
    for sweep in range(SWEEPS):
        improved = False
        candidates = [(name, value) for name, values in over.items() for value in values]
        for name, value in progress(candidates, f"blend: {phase}, sweep {sweep + 1}", unit="weighting"):
            if value == getattr(best, name):
                continue
            candidate = replace(best, **{name: value})
            figures, candidate_floor = validation.score(candidate), validation.floor(candidate)[0]
            if better(figures, candidate_floor, best_figures, best_floor):
                best, best_figures, best_floor, improved = candidate, figures, candidate_floor, True
                log(f"blend: {phase}, sweep {sweep + 1}, {name}={value}: {figures} (floor {candidate_floor})")
        if not improved:
            break
    return best, best_figures


def more_new_items(within: float) -> Rule:
    """The second ascent's rule: the floor met, ndcg@10 at least `within`, more cold_recall@20."""
    def better(figures: dict[str, float], at: float, than: dict[str, float], _: float) -> bool:
        return (figures["cold_recall@20"] >= at and figures["ndcg@10"] >= within
                and figures["cold_recall@20"] > than["cold_recall@20"] + 1e-5)
    return better


def ascents(validation: Validation, start: scoring.BlendWeights, search: dict[str, Sequence[float]],
            log: Callable[[str], None], at_least: float | None = None,
            ) -> tuple[scoring.BlendWeights, dict[str, float], float | None]:
    """The fit's two ascents on one carve (module docstring): ndcg@10 at the floor, then, if the
    floor is met, the most new items within one standard error of that ndcg@10, from the first
    ascent's best or from `start` when `start` meets the floor, is within that error and finds
    more new items (climbing ndcg@10 can leave such a start behind: a fine-tuned encoder's,
    judged from the pre-trained blend's weights). `at_least`: an ndcg@10 the second ascent
    keeps to where the first ascent reached it (a blend this one must not lose ndcg@10 to:
    `improves_on`). The weights, their figures and the second ascent's ndcg@10 bound (None:
    the floor was not met)."""
    start_figures, start_floor = validation.score(start), validation.floor(start)[0]
    log(f"blend: start {start_figures}, floor {start_floor}")
    best, best_figures = ascent(validation, start, preferred, "ndcg@10 at the floor", search, log)
    if best_figures["cold_recall@20"] < validation.floor(best)[0]:
        return best, best_figures, None
    within = best_figures["ndcg@10"] - best_figures["ndcg@10_se"]
    if at_least is not None:
        within = max(within, min(at_least, best_figures["ndcg@10"]))
    rule = more_new_items(within)
    if rule(start_figures, start_floor, best_figures, 0.0):  # the first ascent left behind a start that qualifies
        best, best_figures = start, start_figures
        log(f"blend: the second ascent starts from the start: {start_figures}")
    best, best_figures = ascent(validation, best, rule, f"new items at ndcg@10 >= {within:.5f}", search, log)
    return best, best_figures, within


def without_recency(search: dict[str, Sequence[float]]) -> dict[str, Sequence[float]]:
    """`search` but the history recency, whose every value scores each user again."""
    return {name: values for name, values in search.items() if name not in RECENCY}


def fit(interactions: Sequence[Interaction], index: ItemIndex, config: TrainingConfig = TrainingConfig(),
        start: scoring.BlendWeights = scoring.DEFAULT_WEIGHTS,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
        search: dict[str, Sequence[float]] | None = None) -> FitResult:
    """The best weights found on the validation carve by the fit's rule (module docstring),
    searching `search` (default `SEARCH`)."""
    search = SEARCH if search is None else search
    parts = Parts()  # the carve's models, kept between trials of training settings
    validation = Validation(interactions, index, config, parts)  # trained with the chosen settings
    best, best_figures, within = ascents(validation, start, search, log)
    if within is not None:
        chosen = config
        for name, used in TRAINING_SEARCH.items():
            if not used(best):
                continue
            for value in training_steps(getattr(chosen, name)):
                trial_config = replace(chosen, **{name: value})
                validation.set_aside()
                trial = validation.retrained(trial_config, parts)
                figures = trial.score_once(best)
                log(f"blend: training {name}={value}: {figures}")
                cold_gain = figures["cold_recall@20"] - best_figures["cold_recall@20"]
                ndcg_gain = figures["ndcg@10"] - best_figures["ndcg@10"]
                if figures["ndcg@10"] >= within and (cold_gain > 1e-5 or (cold_gain > -1e-5 and ndcg_gain > 1e-5)) \
                        and figures["cold_recall@20"] >= trial.floor(best)[0]:  # the floor only when it decides
                    validation = trial
                    chosen, best_figures = trial_config, figures
                    log(f"blend: training settings now {name}={value}")
                del trial
                parts.keep(chosen)
        if chosen != config:  # the weights again under the chosen settings (recency kept: it rescores every user)
            config = chosen
            best, best_figures = ascent(validation, best, more_new_items(within),
                                        f"new items at ndcg@10 >= {within:.5f}, chosen training",
                                        without_recency(search), log)
    floor_value, floor_from = validation.floor(best)
    met = best_figures["cold_recall@20"] >= floor_value
    if not met:
        log(f"blend: WARNING: no weighting the fit reached keeps cold_recall@20 at {floor_value} ({floor_from}); "
            f"the best reached {best_figures['cold_recall@20']}. Returning {floor_from}'s own weighting")
        best = replace(best, **ALONE[floor_from])
        best_figures = validation.alone(best)[floor_from]
    return FitResult(with_context(best), {"blend": best_figures, **validation.alone(best)}, floor_value, floor_from,
                     met, config)


def training_steps(value: Any) -> list[Any]:
    """The values one geometric step (TRAINING_STEP) either way from a training setting (a
    whole number stays whole, at least 1)."""
    steps = [value / TRAINING_STEP, value * TRAINING_STEP]
    if isinstance(value, int):
        return [v for v in dict.fromkeys(max(1, round(s)) for s in steps) if v != value]
    return steps


class Spill:
    """The users' components of history-recency settings the memory cache let go, each in a
    file of a temporary folder (removed with this object)."""

    def __init__(self) -> None:
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._files: dict[tuple[float, float], Path] = {}

    def __contains__(self, key: tuple[float, float]) -> bool:
        return key in self._files

    def put(self, key: tuple[float, float], scored: dict[str, Scored]) -> None:
        if key in self._files:  # written before, read back since: the same figures
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="recsys-fit-")
        path = Path(self._folder.name) / f"{len(self._files)}.pickle"
        with path.open("wb") as file:
            pickle.dump(scored, file, protocol=pickle.HIGHEST_PROTOCOL)
        self._files[key] = path

    def get(self, key: tuple[float, float]) -> dict[str, Scored]:
        with self._files[key].open("rb") as file:
            return cast(dict[str, Scored], pickle.load(file))  # a file this process wrote


def _nbytes(scored: dict[str, Scored]) -> int:
    return sum(v.nbytes for rows, borrowed, mapped in scored.values() for part in (borrowed, mapped)
               for v in part.values()) + sum(rows.nbytes for rows, _, _ in scored.values() if rows is not None)


def sampled(held_out: dict[str, set[str]], most: int) -> dict[str, set[str]]:
    """`held_out` if it has at most `most` users, else a sample of `most` of them, chosen by a
    hash of their ids (the same users on every run and carve of the same data)."""
    if len(held_out) <= most:
        return held_out
    chosen = sorted(held_out, key=lambda user: stable_hash(0, "fit", user))[:most]
    return {user: held_out[user] for user in chosen}


def with_context(weights: scoring.BlendWeights) -> scoring.BlendWeights:
    """The context weight is not fitted (validation has no request context): it keeps
    CONTEXT_SHARE x the collaborative weights, so an explicit request steers whatever
    scale the fit gave the collaborative scores; when the fit weights none of them (a
    content-only weighting, the floor's own), the content weights stand in for them.
    CONTEXT_SHARE is a product choice (how hard an explicit request steers the list), not a
    figure of any dataset."""
    collaborative = weights.item_item + weights.sequence + weights.factors
    return replace(weights, context=CONTEXT_SHARE * (collaborative or weights.long_term + weights.session))


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
    catalog = ItemIndex(index.dim, capacity=max(len(rows), 1))
    catalog.extend([index.ids[r] for r in rows], index.vectors_at(np.asarray(rows, dtype=np.int64)),
                   np.array([float(counts[index.ids[r]]) for r in rows], dtype=np.float32),
                   [index.categories[r] for r in rows])
    return catalog
