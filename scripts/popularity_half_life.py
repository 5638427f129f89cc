"""How the "popular" half-life shapes cold-start lists on the demo data.

Folds every MovieLens rating into popularity counters (as the popularity function
does, in one shard) for each half-life given, and prints how many items keep
evidence, the cold user's top 5, and how many of a cold user's top 10 the context
"animated films for children" makes animated (tests/integration/test_api.py wants 5).

    .venv/bin/python scripts/popularity_half_life.py 30 90
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from local_stack.demo import rating_events
from model_build.data import read_items
from recsys.encoder import Encoder
from recsys.events import parse_event
from recsys.index import ItemIndex
from recsys.popularity import DEFAULT_POPULARITY, PopularityCounters
from recsys.ranking import Request, rank

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("half_lives", nargs="+", type=float, help="popular half-lives in days")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small")
    parser.add_argument("--catalog", type=Path, default=ROOT / "build" / "catalog" / "catalog.npz")
    args = parser.parse_args()
    events = [parse_event(e) for e in rating_events(args.data)]
    movies = {m.item_id: m for m in read_items(args.data)}
    context = Encoder(ROOT / "layers" / "encoder" / "encoder_model").encode(["animated films for children"])[0]
    for days in args.half_lives:
        counters = PopularityCounters()
        counters.apply([(str(n + 1), e) for n, e in enumerate(events)],
                       replace(DEFAULT_POPULARITY, popular_half_life_days=days))
        index, _ = ItemIndex.from_npz(args.catalog.read_bytes())
        index.set_live_counts(counters.item_ids, counters.popular, counters.recent)
        plain = [r.item_id for r in rank(index, None, Request(10, now=0.0), reasons=False)]
        steered = [r.item_id for r in rank(index, None, Request(10, now=0.0, context=context), reasons=False)]
        animated = sum("Animation" in movies[i].categories for i in steered)
        print(f"half-life {days:g} d: {len(counters.item_ids)} items with evidence, total weight "
              f"{counters.popular.sum():.0f}; context -> {animated}/10 animated; cold top 5: "
              + "; ".join(movies[i].title for i in plain[:5]))


if __name__ == "__main__":
    main()
