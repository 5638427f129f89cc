"""Cross-lingual retrieval with the multilingual encoder (issue #13), on the bilingual test
catalog (tests/data/bilingual_catalog.csv: 20 items described in English and in Chinese, and
five of them also in German, Spanish, French, Japanese or Russian), through the runtime
Encoder and the int8 artifact `model_build encoder --model use-multilingual` writes
(the Makefile builds it before `make test`)."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from model_build import paths
from recsys.encoder import Encoder

CATALOG = Path(__file__).parents[1] / "data" / "bilingual_catalog.csv"


@pytest.fixture(scope="module")
def catalog() -> tuple[list[dict[str, str]], np.ndarray]:
    with open(CATALOG, newline="", encoding="utf-8") as f:
        items = list(csv.DictReader(f))
    encoder = Encoder(paths.encoder_model("use-multilingual"))
    assert encoder.dim == 512
    return items, encoder.encode([item["text"] for item in items])


def neighbours(vectors: np.ndarray, row: int) -> list[int]:
    """Other items by dot product with item `row`'s vector, nearest first."""
    scores = vectors @ vectors[row]
    scores[row] = -np.inf
    return [int(i) for i in np.argsort(-scores)]


def twin(items: list[dict[str, str]], row: int, lang: str) -> int:
    return next(i for i, item in enumerate(items) if item["twin"] == items[row]["twin"] and item["lang"] == lang)


@pytest.mark.parametrize(("source", "target"), [("zh", "en"), ("en", "zh")])
def test_a_context_in_one_language_finds_the_item_described_in_the_other_in_the_top_3(
        catalog: tuple[list[dict[str, str]], np.ndarray], source: str, target: str) -> None:
    items, vectors = catalog
    rows = [i for i, item in enumerate(items) if item["lang"] == source]
    missed = [items[row]["text"] for row in rows if twin(items, row, target) not in neighbours(vectors, row)[:3]]
    assert len(rows) == 20 and not missed


def test_the_nearest_item_to_a_chinese_item_is_its_english_twin(
        catalog: tuple[list[dict[str, str]], np.ndarray]) -> None:
    items, vectors = catalog
    rows = [i for i, item in enumerate(items) if item["lang"] == "zh"]
    wrong = [items[row]["text"] for row in rows if neighbours(vectors, row)[0] != twin(items, row, "en")]
    assert not wrong


@pytest.mark.parametrize("lang", ["de", "es", "fr", "ja", "ru"])
def test_other_languages_find_both_twins_in_the_top_3(catalog: tuple[list[dict[str, str]], np.ndarray],
                                                       lang: str) -> None:
    items, vectors = catalog
    row = next(i for i, item in enumerate(items) if item["lang"] == lang)
    top = neighbours(vectors, row)[:3]
    assert twin(items, row, "en") in top and twin(items, row, "zh") in top


@pytest.fixture(scope="module")
def multilingual_stack(tmp_path_factory):
    """A local stack whose functions load the multilingual encoder (`make run
    ENCODER=use-multilingual` starts the same), empty but for the bilingual catalog, written
    through PUT /items as `--items` writes it."""
    from local_stack.client import ApiClient
    from local_stack.demo import put_items
    from local_stack.stack import LocalStack, free_port

    with LocalStack(api_key="multilingual-key", admin_key="multilingual-admin", port=free_port(),
                    log_dir=tmp_path_factory.mktemp("multilingual-logs"),
                    model_dir=paths.encoder_model("use-multilingual")) as running:
        running.ready()
        api = ApiClient(running.url, "multilingual-key")
        assert put_items(ApiClient(running.url, "multilingual-admin"), CATALOG) == 45
        deadline = time.time() + 60
        while time.time() < deadline and any(api.get(f"/items/{i}/similar", k=1)[0] != 200 for i in ("en-20", "ru-05")):
            time.sleep(0.5)
        yield api


def test_the_stack_serves_with_the_multilingual_encoder(multilingual_stack) -> None:
    status, health = multilingual_stack.get("/health")
    assert status == 200 and health["model_version"].startswith("universal-sentence-encoder-multilingual")


def test_through_the_api_a_chinese_item_is_most_similar_to_its_english_twin(
        multilingual_stack, catalog: tuple[list[dict[str, str]], np.ndarray]) -> None:
    items, _ = catalog
    wrong = {}
    for item in (i for i in items if i["lang"] == "zh"):
        status, body = multilingual_stack.get(f"/items/{item['item_id']}/similar", k=1)
        assert status == 200, body
        if body["items"][0]["item_id"] != f"en-{item['twin']}":
            wrong[item["item_id"]] = body["items"][0]["item_id"]
    assert not wrong


@pytest.mark.parametrize(("source", "target"), [("zh", "en"), ("en", "zh")])
def test_through_the_api_a_context_in_one_language_lists_the_item_in_the_other_in_the_top_3(
        multilingual_stack, catalog: tuple[list[dict[str, str]], np.ndarray], source: str, target: str) -> None:
    items, _ = catalog
    missed = []
    for item in (i for i in items if i["lang"] == source):
        # A user new to the stack: the context is everything the list knows.
        status, body = multilingual_stack.get(f"/users/reader-{source}-{item['twin']}/recommendations", k=3,
                                              context=item["text"])
        assert status == 200, body
        listed = [i["item_id"] for i in body["items"]]
        if f"{target}-{item['twin']}" not in listed:
            missed.append((item["item_id"], listed))
    assert not missed
