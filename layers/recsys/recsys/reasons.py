"""Why an item is in a list: its real score components, as reasons.

Each component's contribution to the item's score is its blend weight x its value for
the item (what `scoring.combine` adds up). A component gives a reason when it adds at
least MIN_SHARE of the item's positive score; the reason carries the contribution, its
share, and the evidence behind it: the history items whose item-item rows gave the
score, the cosine to the context or the profile, the interaction counts. Every item
gets at least one reason: one with no component over MIN_SHARE (a cold user's item far
down a filtered list, with no interactions and nothing positive) gets its strongest
component, whatever its value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from recsys import popularity as live_popularity
from recsys.index import ItemIndex
from recsys.scoring import BlendWeights, part_weights

MIN_SHARE = 0.15
# Recent pace over usual pace above which a popular item is said to be trending.
TRENDING_RATIO = 1.5


def explain(index: ItemIndex, parts: dict[str, np.ndarray], weights: BlendWeights, rows: list[int],
            explored: set[int] | frozenset[int] = frozenset(),
            history_items: dict[str, dict[int, list[tuple[str, float]]]] | None = None,
            context: str | None = None) -> list[list[dict[str, Any]]]:
    """The reasons of each row, strongest first; `parts` hold each component's score of the
    rows, in their order."""
    weight_of = part_weights(parts, weights)
    rows_array = np.array(rows, dtype=np.int64)
    counts = index.popularity_counts_at(rows_array)
    trend = live_popularity.trending(index.counts[rows_array].astype(np.float64),
                                     index.recent[rows_array].astype(np.float64)) if rows else np.zeros(0)
    explained = []
    for position, row in enumerate(rows):
        shares = {name: weight * float(parts[name][position]) for name, weight in weight_of.items() if weight}
        positive = sum(v for v in shares.values() if v > 0)
        reasons = []
        if row in explored:
            shown = float(index.impressions[row])
            reasons.append({"type": "explored", "impressions": round(shown, 2),
                            "interactions": round(float(counts[position]), 2),
                            "text": f"explored: a fresh item (shown {shown:.0f} times lately), "
                                    "here to learn how people take it"})
        ordered = sorted(shares.items(), key=lambda pair: -pair[1]) or [("popularity", 0.0)]
        given = [(name, value) for name, value in ordered if value > 0 and value >= MIN_SHARE * positive]
        for name, value in given or ordered[:1]:
            reason = _reason(name, float(parts[name][position]), (history_items or {}).get(name, {}).get(row, []),
                             context, float(counts[position]), float(trend[position]))
            share = value / positive if positive > 0 and value > 0 else 0.0
            reasons.append({**reason, "contribution": round(value, 4), "share": round(share, 3)})
        explained.append(reasons)
    return explained


def _reason(name: str, value: float, history: list[tuple[str, float]], context: str | None,
            count: float, trend: float) -> dict[str, Any]:
    if name == "item_item":
        ids = [item_id for item_id, _ in history]
        who = " and ".join(ids) if ids else "items in your history"
        return {"type": "similar_to_history", "items": ids,
                "text": f"chosen by people who also chose {who}, as you did"}
    if name == "new_item_popularity":
        return {"type": "new_item", "predicted_popularity": round(value, 3),
                "text": "new item without collaborative evidence yet: items with text like its are popular"}
    if name == "sequence":
        ids = [item_id for item_id, _ in history]
        who = " and ".join(ids) if ids else "items in your history"
        return {"type": "chosen_alongside", "items": ids,
                "text": f"chosen around the same time as {who} by people who chose those"}
    if name in ("item_item_cold", "sequence_cold", "factors_cold"):
        return {"type": "new_item", "text": "new item without collaborative evidence yet: what people with "
                                            "your history chose, predicted from its text"}
    if name == "factors":
        return {"type": "collaborative_taste", "text": "fits the pattern of your history (matrix factorisation)"}
    if name == "context":
        return {"type": "context", "similarity": round(value, 3),
                "text": f"matches the context \u201c{context}\u201d (cosine {value:.2f})"}
    if name == "long_term":
        return {"type": "long_term_taste", "similarity": round(value, 3),
                "text": f"close to your long-term taste (cosine {value:.2f})"}
    if name == "session":
        return {"type": "session", "similarity": round(value, 3),
                "text": f"close to what you did this session (cosine {value:.2f})"}
    if trend > TRENDING_RATIO:
        return {"type": "trending", "interactions": round(count, 2), "trend": round(trend, 3),
                "text": f"trending now: its recent pace is {trend:.1f}x its usual one"}
    return {"type": "popular", "interactions": round(count, 2), "text": f"popular: {count:.0f} interactions"}
