"""How a request is scored: a weighted sum of collaborative scores (item-item, sequence and
matrix factorisation, each with predicted scores for items without evidence), similarity to
the profile's vectors and the request's context, and popularity."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from recsys.collaborative import Collaborative, history_weights
from recsys.index import ItemIndex
from recsys.profile import DEFAULT_CONFIG, Profile, ProfileConfig, unit


@dataclass(frozen=True)
class BlendWeights:
    """The weight of each score component; the build job fits them on validation data
    (model_build/blend.py) and publishes them with the collaborative model. The defaults
    were fitted on a validation carve of ml-latest-small's train split (README, "Offline
    evaluation"); the matrix-factorisation weight came out 0 there, the sequence model's
    twice the item-item one's (the long-term weight is searched from 0.1 up, never 0: it is
    the only taste of a user whose history the collaborative models do not know). `context`
    is not fitted (the offline data has no request context): an explicit request
    ("zombies", a search, the page's text) should steer the list, so it outweighs the
    collaborative scores: the fit sets it to 2.5 x their weights (item-item + sequence +
    factors; `model_build.blend.with_context`), as it was when item-item alone weighed 2."""

    item_item: float = 1.0
    sequence: float = 2.0
    factors: float = 0.0
    long_term: float = 0.25
    session: float = 0.35
    context: float = 7.5
    popularity: float = 0.1
    # A user with no history leans on popularity.
    cold_popularity: float = 1.0
    # Items without collaborative evidence: how much their predicted collaborative score counts,
    # and the weight of their popularity predicted from their vector.
    cold_transfer: float = 2.0
    new_item_popularity: float = 0.0
    # The predicted score's mix: this share from the ridge-mapped estimate, the rest from the
    # borrowed one (recsys.collaborative, `Collaborative._mixed`).
    cold_mapped_share: float = 0.5
    # Items with little evidence: an item chosen by c users in training keeps c / (c + this) of
    # each collaborative score and gets the rest from its mapped estimate (recsys.collaborative);
    # 0: off. Fitted per dataset by the blend fit.
    evidence_prior: float = 0.0
    # How the history is weighted for the collaborative models (see history_weights).
    recency_half_life: float = 5.0
    recency_floor: float = 0.1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BlendWeights:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            raise ValueError(f"blend weights: expected an object with keys among {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})


DEFAULT_WEIGHTS = BlendWeights()
COLLABORATIVE = ("item_item", "sequence", "factors")  # the components `Collaborative` scores, each with a "_cold" part


def popularity(index: ItemIndex, rows: np.ndarray | None = None) -> np.ndarray:
    """Popularity counts (live decayed sums, or the snapshot's counts before there are any)
    squashed to [0, 1] on a log scale, of every item or of some rows."""
    counts = np.log1p(index.popularity_counts if rows is None else index.popularity_counts_at(rows))
    top = float(np.log1p(index.top_popularity()))
    return counts / top if top > 0 else counts


def components(index: ItemIndex, profile: Profile | None, context: np.ndarray | None, now: float,
               weights: BlendWeights = DEFAULT_WEIGHTS, config: ProfileConfig = DEFAULT_CONFIG,
               collaborative: Collaborative | None = None, every: bool = False,
               rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each score component for every item (or for the candidate `rows` only: each array then
    holds their scores, in their order), by name; those weighted 0 are skipped unless `every`.

    A collaborative component comes in two parts: the model's own scores ("item_item"),
    and, for items without collaborative evidence, the scores predicted from their
    vectors ("item_item_cold", weighted item_item x cold_transfer; with an evidence prior, the
    items with little evidence get part of it too). Items without evidence
    also get their popularity predicted from their vectors ("new_item_popularity").
    """
    parts = {"popularity": popularity(index, rows)}
    history = history_weights(profile, weights.recency_half_life, weights.recency_floor) if profile else {}
    if collaborative is not None and history:
        names = [name for name in COLLABORATIVE if every or getattr(weights, name)]
        parts.update(collaborative_parts(collaborative, history, names, rows, weights.cold_mapped_share,
                                         weights.evidence_prior))
        if every or weights.new_item_popularity:
            parts["new_item_popularity"] = collaborative.new_item_popularity(rows)
    tastes = {name: vector for name, vector in taste_vectors(profile, context, now, config).items()
              if every or getattr(weights, name)}
    if tastes:  # one pass over the item vectors for all of them
        cosines = index.dot(np.stack(list(tastes.values()), axis=1), rows)
        parts.update({name: np.ascontiguousarray(cosines[:, at]) for at, name in enumerate(tastes)})
    return parts


def collaborative_parts(collaborative: Collaborative, history: dict[str, float], names: list[str],
                        rows: np.ndarray | None, mapped_share: float, evidence_prior: float) -> dict[str, np.ndarray]:
    """The named collaborative models' own scores (by name) and new-item scores ("<name>_cold")
    of the history (`recsys.collaborative.history_weights`), of every item or of `rows`."""
    parts = {}
    for name in names:
        part = getattr(collaborative, name)(history, rows, mapped_share, evidence_prior)
        if part is not None:
            parts[name], parts[f"{name}_cold"] = part
    return parts


def taste_vectors(profile: Profile | None, context: np.ndarray | None, now: float,
                  config: ProfileConfig = DEFAULT_CONFIG) -> dict[str, np.ndarray]:
    """The request's vectors that items are scored against by cosine: the profile's long-term
    one, its session one while the session is active, and the context's, where there are."""
    found = {"long_term": unit(profile.long_term) if profile else None,
             "session": unit(profile.session) if profile and profile.session_active(now, config) else None,
             "context": context}
    return {name: vector for name, vector in found.items() if vector is not None}


def combine(parts: dict[str, np.ndarray], weights: BlendWeights) -> np.ndarray:
    """The blended score of every item; a user with no taste signal leans on popularity."""
    scores = np.zeros_like(parts["popularity"])
    for name, weight in part_weights(parts, weights).items():
        if weight:
            scores = scores + weight * parts[name]
    return scores


def part_weights(parts: dict[str, np.ndarray], weights: BlendWeights) -> dict[str, float]:
    """The weight each present component gets in `combine` (what explanations weigh too)."""
    has_taste = any(name in parts and getattr(weights, name)
                    for name in ("item_item", "sequence", "factors", "long_term", "session"))
    found = {}
    for name in parts:
        if name == "popularity":
            found[name] = weights.popularity if has_taste else weights.cold_popularity
        elif name.endswith("_cold"):
            found[name] = getattr(weights, name.removesuffix("_cold")) * weights.cold_transfer
        else:
            found[name] = getattr(weights, name)
    return found
