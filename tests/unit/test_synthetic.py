"""The synthetic dataset generator writes what the build job reads, with a long tail."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from model_build import synthetic
from model_build.collaborative_training import TrainingConfig, train
from model_build.data import read_interactions, read_items
from recsys.index import ItemIndex


def test_the_generated_dataset_trains_and_is_long_tailed(tmp_path: Path) -> None:
    synthetic.run(tmp_path, 500, 5_000, seed=3)
    items = read_items(tmp_path)
    events = list(read_interactions(tmp_path))
    index, _ = ItemIndex.from_npz((tmp_path / "catalog.npz").read_bytes())
    assert len(items) == 500 and len(events) == 5_000 and len(index) == 500
    assert {e.type for e in events} == set(synthetic.TYPES)
    counts = sorted(Counter(e.item_id for e in events).values(), reverse=True)
    assert sum(counts[:50]) > 0.4 * len(events)  # the top tenth of items draws a large share
    model = train(events, index, TrainingConfig(ease_items=100, neighbours=10, factors=4, als_iterations=2))
    assert len(model.item_ids) + len(model.transfer.item_ids) == 500
    assert (model.item_item.rows[100:] >= 0).any()  # items beyond EASE's have co-occurrence rows
    synthetic.run(tmp_path / "again", 500, 5_000, seed=3)
    assert (tmp_path / "again" / "events.csv").read_bytes() == (tmp_path / "events.csv").read_bytes()
