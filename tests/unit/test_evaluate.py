"""model_build.evaluate (`make eval`): when the encoder choice keeps a fine-tuned encoder, its
item vectors and weights rank every list. Unit tests run without the built model, so the
catalog is embedded by hashing encoders (tests.fakes) and the choice itself is a stand-in
that returns what `encoder_choice.finetuned` returns for a kept encoder; the fit, training
and ranking are the real ones. tests/integration/test_eval.py runs the whole of it."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from model_build import blend, encoder_choice, evaluate, paths
from model_build import catalog as catalog_stage
from model_build.collaborative_training import TrainingConfig, train
from model_build.data import read_interactions
from recsys.collaborative import Collaborative
from recsys.index import ItemIndex
from recsys.scoring import BlendWeights
from tests.fakes import HashingEncoder

WORDS = ("red", "blue", "green", "gold", "grey", "pink")


@pytest.fixture(autouse=True)
def _no_built_model(monkeypatch) -> None:
    """The stand-ins below are the only encoders this module's tests may reach."""
    monkeypatch.setattr(paths, "ENCODER_MODEL", Path("/nonexistent/encoder"))


class PretrainedEncoder(HashingEncoder):
    version = "hashing-pretrained"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(16)


class TunedEncoder(PretrainedEncoder):
    """Other vectors for the same texts: what a fine-tuned encoder gives."""
    version = "hashing-tuned"

    def encode(self, texts: list[str]) -> Any:
        return super().encode([" ".join(f"{word}-tuned" for word in text.split()) for text in texts])


def small_split(directory: Path) -> None:
    """80 users of 12 choices among 150 items in six colour groups, mostly their own colour;
    each user's last 3 held out, as split.py holds out the last 20%."""
    rng = random.Random(3)
    directory.mkdir()
    rows = ["item_id,title,genres,tags"] + [f"i{i},item {i} {WORDS[i % 6]},," for i in range(150)]
    (directory / "items.csv").write_text("\n".join(rows) + "\n")
    train_rows, test_rows = ["user_id,item_id,rating,timestamp"], ["user_id,item_id,rating,timestamp"]
    for user in range(80):
        colour = user % 6
        own = [i for i in range(150) if i % 6 == colour]
        chosen = rng.sample(own, 9) + rng.sample(range(150), 3)
        rng.shuffle(chosen)
        for t, item in enumerate(chosen):
            (train_rows if t < 9 else test_rows).append(f"u{user},i{item},{rng.choice((3, 4, 5))},{1_000 + t}")
    (directory / "train.csv").write_text("\n".join(train_rows) + "\n")
    (directory / "test.csv").write_text("\n".join(test_rows) + "\n")


def test_a_kept_fine_tuned_encoder_ranks_every_list_with_its_vectors_and_weights(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(paths, "EVAL", tmp_path / "eval")
    monkeypatch.setattr(paths, "VECTOR_CACHE", tmp_path / "cache.npz")
    split, tuned_npz = tmp_path / "split", tmp_path / "tuned.npz"
    small_split(split)
    monkeypatch.setattr(catalog_stage, "Encoder", TunedEncoder)
    assert catalog_stage.run(split, tmp_path, tuned_npz, cache=None) == 0
    monkeypatch.setattr(catalog_stage, "Encoder", PretrainedEncoder)
    chosen: dict[str, Any] = {}

    def kept(data, interactions, weights, than, than_floor, work, steps, lap, config) -> dict[str, Any]:
        tuned = replace(weights, long_term=3.0, item_item=0.0)  # weights fitted in its space
        chosen.update(config=config, weights=json.loads(blend.with_context(tuned).to_json()))
        return {"kept": True, "training": {}, "validation": {"finetuned": than, "pretrained": than},
                "cold_floor": {"finetuned": than_floor, "pretrained": than_floor}, "weights": chosen["weights"],
                "encoder": str(work / "int8"), "catalog": str(tuned_npz)}

    monkeypatch.setattr(encoder_choice, "finetuned", kept)
    out = tmp_path / "recs.jsonl"
    assert evaluate.run(split, out, tmp_path, tune=True, steps=1) == 0

    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["weights"] == chosen["weights"] and report["finetune"]["kept"]
    assert TrainingConfig(**report["training"]) == chosen["config"]
    interactions = list(read_interactions(split))
    weights = BlendWeights.from_json(json.dumps(chosen["weights"]))
    served = {}
    for name, catalog_npz in (("tuned", tuned_npz), ("pre-trained", paths.eval_dir(split) / "catalog.npz")):
        index, _ = ItemIndex.from_npz(catalog_npz.read_bytes())
        collaborative = Collaborative(train(interactions, index, chosen["config"]), index)
        profiles = blend.profiles_from(interactions, index)
        served[name] = {user: {"blend": blend.rank(index, profiles.get(user), weights, collaborative),
                               "content": blend.rank(index, profiles.get(user),
                                                     replace(weights, **blend.ALONE[blend.CONTENT_ONLY]),
                                                     collaborative)}
                        for user in evaluate.test_users(split)}
    for suffix, path in (("blend", out), ("content", out.with_name("recs.content.jsonl"))):
        with open(path, encoding="utf-8") as f:
            lists = {row["user_id"]: row["items"] for row in map(json.loads, f)}
        assert lists == {user: ranked[suffix] for user, ranked in served["tuned"].items()}
        assert lists != {user: ranked[suffix] for user, ranked in served["pre-trained"].items()}

