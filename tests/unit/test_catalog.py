"""recsys.catalog: what a client may store as an item, and the text the encoder reads."""
from __future__ import annotations

import pytest

from recsys.catalog import MAX_DESCRIPTION, MAX_LABEL_LENGTH, MAX_LABELS, MAX_TITLE, InvalidItem, Item, parse_item
from recsys.events import InvalidEvent


def test_a_full_item_is_parsed_and_trimmed() -> None:
    item = parse_item("m-1", {"title": "  Alien  ", "description": " In space. ", "categories": ["Horror", "Sci-Fi"],
                              "tags": ["ridley scott"], "attributes": {"year": 1979, "rated": "R", "cult": True}})
    assert item == Item("m-1", "Alien", "In space.", ["Horror", "Sci-Fi"], ["ridley scott"],
                        {"year": 1979, "rated": "R", "cult": True})
    assert item.to_json()["item_id"] == "m-1"


def test_only_a_title_is_required() -> None:
    assert parse_item("m-1", {"title": "Alien"}) == Item("m-1", "Alien")


@pytest.mark.parametrize("body", [{}, {"title": ""}, {"title": "   "}, {"title": 7}, {"title": "x" * (MAX_TITLE + 1)}])
def test_title_is_required_and_limited(body: dict) -> None:
    with pytest.raises(InvalidItem, match="title"):
        parse_item("m-1", body)


@pytest.mark.parametrize("body", [
    {"description": "x" * (MAX_DESCRIPTION + 1)},
    {"description": None},
    {"categories": ["x"] * (MAX_LABELS + 1)},
    {"categories": "Horror"},
    {"tags": [""]},
    {"tags": ["  "]},
    {"tags": ["x" * (MAX_LABEL_LENGTH + 1)]},
    {"tags": [3]},
    {"attributes": {f"k{n}": n for n in range(51)}},
    {"attributes": ["year"]},
    {"attributes": {"": 1}},
    {"attributes": {"k" * (MAX_LABEL_LENGTH + 1): 1}},
])
def test_limits(body: dict) -> None:
    with pytest.raises(InvalidItem):
        parse_item("m-1", {"title": "Alien", **body})


def test_unknown_fields_are_rejected_and_named() -> None:
    with pytest.raises(InvalidItem, match="price"):
        parse_item("m-1", {"title": "Alien", "price": 3})


def test_the_body_must_be_an_object() -> None:
    with pytest.raises(InvalidItem):
        parse_item("m-1", ["Alien"])


def test_the_item_id_is_validated() -> None:
    with pytest.raises(InvalidEvent, match="item_id"):
        parse_item("bad id", {"title": "Alien"})


def test_labels_are_stripped_and_deduped_in_order() -> None:
    item = parse_item("m-1", {"title": "Alien", "categories": ["Sci-Fi", "Horror", " Sci-Fi "],
                              "tags": ["b", "a", "b"]})
    assert item.categories == ["Sci-Fi", "Horror"]
    assert item.tags == ["b", "a"]


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, float("nan"), float("inf"), "x" * (MAX_LABEL_LENGTH + 1)])
def test_attributes_are_scalars_only(value) -> None:
    with pytest.raises(InvalidItem, match="attribute"):
        parse_item("m-1", {"title": "Alien", "attributes": {"k": value}})


def test_text_has_title_genres_tags_and_description() -> None:
    item = Item("m-1", "Alien", "A crew meets a creature.", ["Horror", "Sci-Fi"], ["space", "ridley scott"])
    assert item.text == "Alien Genres: Horror, Sci-Fi. Tags: space, ridley scott. A crew meets a creature."
    assert Item("m-2", "Heat").text == "Heat"


def test_text_hash_follows_the_text() -> None:
    item = Item("m-1", "Alien", categories=["Horror"])
    same_text = Item("other-id", "Alien", categories=["Horror"], attributes={"year": 1979})
    assert item.text_hash == same_text.text_hash
    assert len(item.text_hash) == 32
    for changed in (Item("m-1", "Aliens", categories=["Horror"]), Item("m-1", "Alien", categories=["Sci-Fi"]),
                    Item("m-1", "Alien", categories=["Horror"], tags=["space"]),
                    Item("m-1", "Alien", "desc", categories=["Horror"])):
        assert changed.text_hash != item.text_hash
