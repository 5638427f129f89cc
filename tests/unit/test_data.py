"""model_build.data: reading items and interactions from a split or from MovieLens files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from model_build.data import (
    IMPLICIT,
    DatasetError,
    Interaction,
    positive_choices,
    read_interactions,
    read_items,
    title_and_rest,
    weighted_choices,
)
from recsys.catalog import MAX_DESCRIPTION, MAX_TITLE, parse_item


def write(directory: Path, name: str, *lines: str) -> Path:
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_items_from_a_split(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "item_id,title,genres,tags",
          '1,"Toy Story (1995)",Animation|Comedy,pixar|fun| pixar ',
          "2,Heat (1995),Action,",
          "3,Untitled,(no genres listed),")
    items = read_items(tmp_path)
    assert [i.item_id for i in items] == ["1", "2", "3"]
    assert (items[0].title, items[0].categories, items[0].tags) == ("Toy Story (1995)", ["Animation", "Comedy"],
                                                                    ["pixar", "fun"])
    assert (items[1].categories, items[1].tags) == (["Action"], [])
    assert items[2].categories == []


def test_items_from_movielens_with_tags(tmp_path: Path) -> None:
    write(tmp_path, "movies.csv", "movieId,title,genres",
          '1,"Toy Story (1995)",Adventure|Animation',
          '2,"Jumanji, The (1995)",(no genres listed)')
    write(tmp_path, "tags.csv", "userId,movieId,tag,timestamp",
          "5,1,pixar,1",
          "6,1,pixar,2",
          "6,1,funny,3",
          "7,9,orphan,4")
    items = read_items(tmp_path)
    assert [(i.item_id, i.title) for i in items] == [("1", "Toy Story (1995)"), ("2", "Jumanji, The (1995)")]
    assert (items[0].categories, items[0].tags) == (["Adventure", "Animation"], ["pixar", "funny"])
    assert (items[1].categories, items[1].tags) == ([], [])


def test_items_from_movielens_without_tags(tmp_path: Path) -> None:
    write(tmp_path, "movies.csv", "movieId,title,genres", "1,Heat (1995),Action|Crime")
    assert read_items(tmp_path)[0].tags == []


def test_the_split_is_preferred_over_movielens(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "item_id,title,genres,tags", "s1,From split,Drama,")
    write(tmp_path, "movies.csv", "movieId,title,genres", "m1,From movielens,Drama")
    assert [i.item_id for i in read_items(tmp_path)] == ["s1"]


def test_no_item_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no items.csv, movies.csv or items.jsonl"):
        read_items(tmp_path)


def test_the_live_catalogs_export_replaces_and_adds_to_the_csv_items(tmp_path: Path) -> None:
    """items.jsonl (`ops export-items`) is the live catalog: its items win over the CSV's of
    the same id (the API's update is newer) and the API's own items are added."""
    (tmp_path / "items.csv").write_text("item_id,title,genres,tags\n1,Old title,Drama,\n2,Kept,Comedy,\n")
    (tmp_path / "items.jsonl").write_text(
        '{"item_id": "1", "title": "New title", "categories": ["Horror"], "attributes": {"year": 2001}}\n\n'
        '{"item_id": "api-7", "title": "Added through the API", "description": "long text"}\n')
    items = {item.item_id: item for item in read_items(tmp_path)}
    assert list(items) == ["1", "2", "api-7"]
    assert (items["1"].title, items["1"].categories, items["1"].attributes) == ("New title", ["Horror"], {"year": 2001})
    assert items["2"].title == "Kept" and items["api-7"].description == "long text"
    (tmp_path / "items.csv").unlink()
    assert [item.item_id for item in read_items(tmp_path)] == ["1", "api-7"], "the export alone is a catalog"
    (tmp_path / "items.jsonl").write_text('{"title": "no id"}\n')
    with pytest.raises(DatasetError, match="items.jsonl:1: each line needs an item_id"):
        read_items(tmp_path)


def test_a_title_longer_than_an_items_title_goes_on_in_the_description(tmp_path: Path) -> None:
    """split.py writes a product set's whole text in the title column: none of it is cut, and
    the title ends at a word."""
    text = " ".join(f"word{n}" for n in range(200))  # 1,189 characters
    write(tmp_path, "items.csv", "item_id,title,genres,tags", f"p1,{text},,")
    (item,) = read_items(tmp_path)
    assert len(item.title) <= MAX_TITLE and text.startswith(item.title + " ")
    assert item.title + " " + item.description == text == item.text
    assert parse_item("p1", {k: v for k, v in item.to_json().items() if k != "item_id"}) == item  # the API takes it
    huge = " ".join(f"w{n}" for n in range(3_000))  # 16,889 characters: past the description's limit too
    title, rest = title_and_rest(huge)
    assert huge.startswith(f"{title} {rest} ") and len(rest) <= MAX_DESCRIPTION and not rest.endswith(" ")


def test_interactions_from_a_split(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", "user_id,item_id,rating,timestamp", "u1,i1,4.5,1700000000", "u2,i9,1,1700000001.0")
    assert list(read_interactions(tmp_path)) == [Interaction("u1", "i1", 4.5, 1_700_000_000),
                                                 Interaction("u2", "i9", 1.0, 1_700_000_001)]


def test_interactions_from_movielens(tmp_path: Path) -> None:
    write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp", "1,31,2.5,1260759144", "1,29,4,1260759145")
    assert list(read_interactions(tmp_path)) == [Interaction("1", "31", 2.5, 1_260_759_144),
                                                 Interaction("1", "29", 4.0, 1_260_759_145)]


@pytest.mark.parametrize("name", ["train.csv", "ratings.csv"])
def test_a_rating_column_of_one_value_is_implicit_feedback(tmp_path: Path, name: str) -> None:
    """split.py writes rating 1 for every interaction of its RecBole product sets, positions as
    the time. Read as ratings, a short history sits below the mean the profile's prior starts
    from and counts as dislikes; read as choices, every row is a positive one, alike."""
    header = "user_id,item_id,rating,timestamp" if name == "train.csv" else "userId,movieId,rating,timestamp"
    write(tmp_path, name, header, *(f"u1,i{t},1,{t}" for t in range(5)), "u2,i0,1.0,0")
    rows = list(read_interactions(tmp_path))
    assert {row.type for row in rows} == {IMPLICIT} and len(rows) == 6
    assert weighted_choices(rows) == [(row, 1.0) for row in rows]
    as_ratings = [replace(row, type="rating") for row in rows]  # what they were read as before
    assert positive_choices(as_ratings) == []


def test_one_row_is_a_rating_and_a_rating_that_is_no_number_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", "user_id,item_id,rating,timestamp", "u1,i1,4.5,1")
    assert [row.type for row in read_interactions(tmp_path)] == ["rating"]
    for bad in ("nan", "inf"):  # one of them among 1s would have read the file as ratings again
        write(tmp_path, "train.csv", "user_id,item_id,rating,timestamp", "u1,i1,1,1", f"u1,i2,{bad},2", "u1,i3,1,3")
        with pytest.raises(DatasetError, match=r"train\.csv:3: a rating must be a finite number"):
            list(read_interactions(tmp_path))


def test_a_rating_column_with_two_values_is_ratings(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", "user_id,item_id,rating,timestamp", *(f"u1,i{t},1,{t}" for t in range(5)),
          "u1,i9,2,9")
    assert {row.type for row in read_interactions(tmp_path)} == {"rating"}


def test_no_interaction_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no train.csv or ratings.csv"):
        list(read_interactions(tmp_path))


@pytest.mark.parametrize(("name", "header"), [("train.csv", "user_id,item_id,rating,timestamp"),
                                              ("ratings.csv", "userId,movieId,rating,timestamp")])
def test_a_bad_row_names_the_file_and_line(tmp_path: Path, name: str, header: str) -> None:
    write(tmp_path, name, header, "1,31,2.5,1260759144", "1,32,good,1260759145")
    with pytest.raises(DatasetError, match=rf"{name}:3: "):
        list(read_interactions(tmp_path))


def test_a_short_row_names_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", "user_id,item_id,rating,timestamp", "u1,i1,4.5,1700000000", "u1,i2")
    with pytest.raises(DatasetError, match=r"train\.csv:3: too few fields"):
        list(read_interactions(tmp_path))


@pytest.mark.parametrize(("name", "header", "missing"), [
    ("train.csv", "user_id,item_id,timestamp", "rating"),
    ("ratings.csv", "userId,rating,timestamp", "movieId"),
    ("items.csv", "item_id,title,genres", "tags"),
    ("movies.csv", "movieId,genres", "title"),
])
def test_missing_columns_are_named(tmp_path: Path, name: str, header: str, missing: str) -> None:
    write(tmp_path, name, header)
    reader = read_items if name in ("items.csv", "movies.csv") else read_interactions
    with pytest.raises(DatasetError, match=rf"{name}: missing column\(s\) {missing}"):
        list(reader(tmp_path))


def test_an_empty_file_has_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("")
    with pytest.raises(DatasetError, match="missing column"):
        list(read_interactions(tmp_path))


def test_an_item_without_a_title_is_kept_by_its_id_and_its_line_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """split.py writes an empty title for a rated item the dataset's item file lacks."""
    write(tmp_path, "items.csv", "item_id,title,genres,tags", "1,Heat,Action,", '2," ",Drama,', "3,,,")
    items = read_items(tmp_path)
    assert [(i.item_id, i.title, i.categories) for i in items] == [
        ("1", "Heat", ["Action"]), ("2", "2", ["Drama"]), ("3", "3", [])]
    assert "items.csv: 2 item(s) without a title, named by their id (line 3, 4)" in capsys.readouterr().err


def test_an_item_without_an_id_names_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "item_id,title,genres,tags", "1,Heat,Action,", ',Casino,Drama,')
    with pytest.raises(DatasetError, match=r"items\.csv:3: an item needs an id"):
        read_items(tmp_path)


def test_exported_events_are_interactions(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", "user_id,item_id,rating,timestamp,type,event_id,dwell_seconds,query",
          "u1,10,4.5,100.0,rating,e1,,", "u1,,,101.0,search,e2,,space", "u1,11,,102.5,click,e3,30,",
          "u1,12,,103.0,hide,e4,,")
    read = list(read_interactions(tmp_path))
    assert [(i.item_id, i.type, i.timestamp, i.dwell_seconds) for i in read] == [
        ("10", "rating", 100, None), ("11", "click", 102, 30.0), ("12", "hide", 103, None)]
    assert read[0].rating == 4.5 and read[1].as_event().dwell_seconds == 30.0
    assert [i.item_id for i in positive_choices(read)] == ["10", "11"]


def test_training_rows_are_positive_choices_only() -> None:
    rows = [Interaction("u", "loved", 5.0, 1), Interaction("u", "hated", 0.5, 2),
            Interaction("u", "seen", 0.0, 3, "view"), Interaction("u", "bounced", 0.0, 4, "click", 1.0),
            Interaction("u", "disliked", 0.0, 5, "dislike")]
    assert [r.item_id for r in positive_choices(rows)] == ["loved", "seen"]
