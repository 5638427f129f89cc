"""Reading a dataset directory: the MovieLens files, or a split made by shared/eval/split.py.

Items: `items.csv` (item_id,title,genres,tags; genres and tags '|'-separated) or
MovieLens `movies.csv` (+ optional `tags.csv`), and `items.jsonl` — the live catalog as
`python -m ops export-items` writes it (one item per line, as PUT /items/{id} takes it,
with its item_id) — whose items replace the CSV's of the same id and add the rest: the
items the API added survive a release. Interactions: `train.csv`
(user_id,item_id,rating,timestamp), MovieLens `ratings.csv`, or `events.csv` written by
`python -m ops export-events` (the same first four columns, then type, event_id,
dwell_seconds, query; item events only are read, each with its type and dwell). A rating
column with one value in every row is implicit feedback: each row is a choice (`IMPLICIT`).

The collaborative models train on positive choices only (`weighted_choices`): each
user's interactions folded as the events function folds them into a profile, keeping the
items whose history weight comes out above 0 (recsys.profile), weighted by it: never a
hide, a dislike, a bounce or a rating below the user's tolerance.
"""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recsys.catalog import MAX_DESCRIPTION, MAX_LABEL_LENGTH, MAX_LABELS, MAX_TITLE, Item, parse_item
from recsys.events import Event
from recsys.profile import choice_weights

NO_GENRES = "(no genres listed)"
# A rating column that holds one value throughout (split.py writes "1" for every interaction
# of its RecBole/UniSRec product sets) rates nothing: each row is a choice, read as this event
# type, weight ProfileConfig.click = 1 without dwell (a rating at the user's mean weighs 0.8).
# Read as ratings, every row would sit below the mean the profile's prior starts from, and a
# short history would be all negative.
IMPLICIT = "click"
EXPORTED_ITEMS = "items.jsonl"
# MovieLens titles end with the release year, "Heat (1995)": kept as the attribute `year`.
YEAR = re.compile(r"\((\d{4})\)\s*$")


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    rating: float  # the value of a rating; ignored for other types
    timestamp: int
    type: str = "rating"
    dwell_seconds: float | None = None

    def as_event(self) -> Event:
        """The event this interaction is, as a client would send it."""
        kind = "" if self.type == "rating" else f"-{self.type}"  # ratings keep the ids the demo always sent
        return Event(event_id=f"ml-{self.user_id}-{self.item_id}-{self.timestamp}{kind}",
                     user_id=self.user_id, type=self.type, timestamp=float(self.timestamp), item_id=self.item_id,
                     value=min(5.0, max(0.0, self.rating)) if self.type == "rating" else None,
                     dwell_seconds=self.dwell_seconds)


def positive_choices(interactions: Iterable[Interaction]) -> list[Interaction]:
    """The interactions whose item is a positive choice of its user (`weighted_choices`)."""
    return [row for row, _ in weighted_choices(interactions)]


def weighted_choices(interactions: Iterable[Interaction]) -> list[tuple[Interaction, float]]:
    """The interactions whose item is a positive choice of its user, each with the item's
    choice weight for that user (`recsys.profile.choice_weights` over the user's events):
    what the collaborative models are trained on."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in interactions:
        by_user[row.user_id].append(row)
    kept = []
    for rows in by_user.values():
        weights = choice_weights(row.as_event() for row in rows)
        kept += [(row, weights[row.item_id]) for row in rows if row.item_id in weights]
    return kept


def read_items(directory: Path) -> list[Item]:
    """Every item of the CSV sources, then the live catalog's export (`items.jsonl`) over them."""
    from_csv, live = item_sources(directory)
    items = {item.item_id: item for item in from_csv}
    items.update((item.item_id, item) for item in live)
    return list(items.values())


def item_sources(directory: Path) -> tuple[list[Item], list[Item]]:
    """The CSV sources' items and the live catalog's export (`items.jsonl`); either may be
    missing, not both."""
    directory = Path(directory)
    live = (directory / EXPORTED_ITEMS).exists()
    if live and not any((directory / name).exists() for name in ("items.csv", "movies.csv")):
        return [], exported_items(directory)
    return csv_items(directory), exported_items(directory)


def exported_items(directory: Path) -> list[Item]:
    """The live catalog's items, from the directory's `items.jsonl` (none without one)."""
    path = Path(directory) / EXPORTED_ITEMS
    return list(_exported_items(path)) if path.exists() else []


def _exported_items(path: Path) -> Iterator[Item]:
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                body = json.loads(text)
                item_id = body.pop("item_id", None) if isinstance(body, dict) else None
                if not isinstance(item_id, str):
                    raise ValueError("each line needs an item_id")
                yield parse_item(item_id, body)
            except ValueError as error:
                raise DatasetError(f"{path}:{line}: {error}") from None


def csv_items(directory: Path) -> list[Item]:
    """Every CSV item; one with no title (split.py writes one for an interaction's item that
    the dataset's item file lacks) is kept, named by its id, and reported with its line."""
    untitled: list[int] = []
    if (directory / "items.csv").exists():
        path = directory / "items.csv"
        items = [_item(path, line, r["item_id"], r["title"], r["genres"], r["tags"].split("|"), untitled)
                 for line, r in _rows(path, ("item_id", "title", "genres", "tags"))]
        _report_untitled(path, untitled)
        return items
    if (directory / "movies.csv").exists():
        tags: dict[str, list[str]] = {}
        if (directory / "tags.csv").exists():
            for _, r in _rows(directory / "tags.csv", ("movieId", "tag")):
                movie_tags = tags.setdefault(r["movieId"], [])
                if r["tag"] not in movie_tags:
                    movie_tags.append(r["tag"])
        path = directory / "movies.csv"
        items = [_item(path, line, r["movieId"], r["title"], r["genres"], tags.get(r["movieId"], []), untitled)
                 for line, r in _rows(path, ("movieId", "title", "genres"))]
        _report_untitled(path, untitled)
        return items
    raise DatasetError(f"{directory}: no items.csv, movies.csv or items.jsonl")


def read_interactions(directory: Path) -> Iterator[Interaction]:
    directory = Path(directory)
    if (directory / "events.csv").exists():
        yield from _exported_events(directory / "events.csv")
        return
    if (directory / "train.csv").exists():
        path, columns = directory / "train.csv", ("user_id", "item_id", "rating", "timestamp")
    elif (directory / "ratings.csv").exists():
        path, columns = directory / "ratings.csv", ("userId", "movieId", "rating", "timestamp")
    else:
        raise DatasetError(f"{directory}: no train.csv or ratings.csv")
    user, item, rating, timestamp = columns
    kind = rating_kind(path, rating)
    for line, r in _rows(path, columns):
        try:
            yield Interaction(r[user], r[item], _rating(r[rating]), int(float(r[timestamp])), kind)
        except ValueError as error:
            raise DatasetError(f"{path}:{line}: {error}") from None


def rating_kind(path: Path, column: str = "rating") -> str:
    """The event type the rows of `path` are: "rating", or IMPLICIT when two rows or more all
    hold the same value in `column` (read up to the second value)."""
    first, rows = None, 0
    for line, r in _rows(path, (column,)):
        try:
            value = _rating(r[column])
        except ValueError as error:
            raise DatasetError(f"{path}:{line}: {error}") from None
        if first is None:
            first = value
        elif value != first:
            return "rating"
        rows += 1
    return IMPLICIT if rows >= 2 else "rating"


def _rating(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"a rating must be a finite number, not {text!r}")
    return value


def _exported_events(path: Path) -> Iterator[Interaction]:
    names: dict[str, str] = {}  # one string per user, item and type: millions of rows repeat them
    for line, r in _rows(path, ("user_id", "item_id", "rating", "timestamp", "type")):
        if not r["item_id"]:
            continue
        try:
            dwell = r.get("dwell_seconds") or None
            user, item, kind = (names.setdefault(r[c], r[c]) for c in ("user_id", "item_id", "type"))
            yield Interaction(user, item, _rating(r["rating"] or "0"), int(float(r["timestamp"])), kind,
                              float(dwell) if dwell is not None else None)
        except ValueError as error:
            raise DatasetError(f"{path}:{line}: {error}") from None


def _report_untitled(path: Path, lines: list[int]) -> None:
    if lines:
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        print(f"{path}: {len(lines)} item(s) without a title, named by their id (line {shown})",
              file=sys.stderr)


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            if any(row.get(c) is None for c in required):
                raise DatasetError(f"{path}:{reader.line_num}: too few fields")
            yield reader.line_num, row


def _item(path: Path, line: int, item_id: str, title: str, genres: str, tags: list[str],
          untitled: list[int]) -> Item:
    if not item_id.strip():
        raise DatasetError(f"{path}:{line}: an item needs an id")
    if not title.strip():
        untitled.append(line)
        title = item_id
    title, rest = title_and_rest(title.strip())
    categories = list(dict.fromkeys(g for g in genres.split("|") if g and g != NO_GENRES))
    clean_tags = list(dict.fromkeys(t.strip()[:MAX_LABEL_LENGTH] for t in tags if t.strip()))
    year = YEAR.search(title)
    return Item(item_id=item_id, title=title, description=rest, categories=categories[:MAX_LABELS],
                tags=clean_tags[:MAX_LABELS], attributes={"year": int(year.group(1))} if year else {})


def title_and_rest(text: str) -> tuple[str, str]:
    """A title longer than an item's (split.py puts a product set's whole text in the title
    column; a feed may too): the title up to the last space within MAX_TITLE, the rest, up to
    the last space within MAX_DESCRIPTION, the description, so the encoder still reads it
    (`Item.text`)."""
    title = _words(text, MAX_TITLE)
    return title, _words(text[len(title):].strip(), MAX_DESCRIPTION)


def _words(text: str, limit: int) -> str:
    """`text`, or its words within `limit` characters (its first `limit` if it has no space there)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[:cut if cut > 0 else limit].rstrip()
