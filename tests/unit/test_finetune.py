"""model_build.finetune on a tiny random-weight BERT (the real tokenizer, 2 layers of 32
units), so the contrastive loop, the validation gate and the output run in seconds."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from model_build import finetune

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tiny_bert: Callable[[int, int], Path]) -> Path:
    return tiny_bert(32, 64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tastes (space films, cooking films); each user watches 8 of their taste in order."""
    folder = tmp_path_factory.mktemp("data")
    space = [f"Star voyage {n}" for n in range(12)]
    cooking = [f"Kitchen stories {n}" for n in range(12)]
    titles = space + cooking
    (folder / "items.csv").write_text("item_id,title,genres,tags\n" + "".join(
        f"{n},{title},{'Sci-Fi' if n < 12 else 'Comedy'},\n" for n, title in enumerate(titles)))
    rows = ["user_id,item_id,rating,timestamp"]
    for user in range(24):
        offset = 0 if user % 2 == 0 else 12
        rows += [f"u{user},{offset + (user + t) % 12},4.0,{1000 + t}" for t in range(8)]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_history_pairs_point_at_the_next_choice() -> None:
    from model_build.data import Interaction
    rows = [Interaction("u", item, 4.0, t) for t, item in enumerate(["a", "b", "c", "d", "e"])]
    texts = {i: f"text {i}" for i in "abcde"}
    found = finetune.pairs(rows, {i: i.upper() for i in "abcde"}, texts)
    assert found[0] == ("A", "text b") and found[-1] == ("B | C | D", "text e") and len(found) == 4


def test_finetune_keeps_the_model_only_when_validation_improves(tiny_model: Path, dataset: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "finetuned"
    assert finetune.run(dataset, tiny_model, out, steps=6, batch=8, lr=1e-3, seed=1) == 0
    report = json.loads((out / "finetune.json").read_text())
    assert report["device"] in ("cpu", "cuda") and report["steps"] == 6 and report["pairs"] > 0
    assert report["kept"] == (report["finetuned"]["ndcg@10"] > report["pretrained"]["ndcg@10"])
    assert (out / "config.json").exists() == report["kept"]
    if report["kept"]:
        assert (out / "tokenizer.json").exists()
        transformers.AutoModel.from_pretrained(str(out), local_files_only=True)


def test_finetune_judged_by_its_caller_always_writes_the_model(tiny_model: Path, dataset: Path,
                                                               tmp_path: Path) -> None:
    """`make eval` judges the fine-tuned encoder by the whole blend on validation
    (model_build/evaluate.py `finetuned`): the stage skips its content-only figures and
    always writes the model."""
    out = tmp_path / "finetuned"
    assert finetune.run(dataset, tiny_model, out, steps=4, batch=8, lr=1e-3, seed=1, judge=False) == 0
    report = json.loads((out / "finetune.json").read_text())
    assert report["kept"] and report["pretrained"] is None and report["finetuned"] is None
    assert report["frozen_layers"] == (0 if report["device"] == "cuda" else 1), "on CPU the lower half stays frozen"
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    transformers.AutoModel.from_pretrained(str(out), local_files_only=True)
