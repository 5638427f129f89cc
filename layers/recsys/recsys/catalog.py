"""Catalog items: what a client may store, and the text the encoder reads."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from recsys.events import is_finite_number, is_text, validate_id

MAX_TITLE = 500
MAX_DESCRIPTION = 5_000
MAX_LABELS = 50
MAX_LABEL_LENGTH = 100
MAX_ATTRIBUTES = 50
ITEM_FIELDS = ("title", "description", "categories", "tags", "attributes", "available")
# What a DynamoDB number can hold (the item store, and every store on AWS): 38 significant
# digits, magnitudes 1e-130 to under 1e126. One stored outside them made every later read of
# the catalog fail; an attribute is refused instead.
MAX_SIGNIFICANT_DIGITS = 38
SMALLEST_MAGNITUDE = 1e-130
MAGNITUDE_BOUND = 1e126


class InvalidItem(ValueError):
    """An item body that cannot be stored; the message says why."""


@dataclass
class Item:
    """A catalog item. `available` False retires it (sold out, withdrawn): it stays stored and
    keeps its place in users' histories, but no list offers it."""
    item_id: str
    title: str
    description: str = ""
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    available: bool = True

    @property
    def text(self) -> str:
        """What the encoder reads: title, categories, tags, then the description."""
        parts = [self.title]
        if self.categories:
            parts.append("Genres: " + ", ".join(self.categories) + ".")
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags) + ".")
        if self.description:
            parts.append(self.description)
        return " ".join(parts)

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "description": self.description,
                "categories": self.categories, "tags": self.tags, "attributes": self.attributes,
                "available": self.available}


def parse_item(item_id: str, body: Any) -> Item:
    if not isinstance(body, dict):
        raise InvalidItem("the body must be a JSON object")
    unknown = sorted(set(body) - set(ITEM_FIELDS))
    if unknown:
        raise InvalidItem(f"unknown field(s): {', '.join(unknown)}")
    title = body.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE or not is_text(title):
        raise InvalidItem(f"title is required: a non-empty string of at most {MAX_TITLE} characters")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or not is_text(description):
        raise InvalidItem(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    available = body.get("available", True)
    if not isinstance(available, bool):
        raise InvalidItem("available must be true or false")
    return Item(
        item_id=validate_id("item_id", item_id),
        title=title.strip(),
        description=description.strip(),
        categories=_labels(body, "categories"),
        tags=_labels(body, "tags"),
        attributes=_attributes(body.get("attributes", {})),
        available=available,
    )


def _labels(body: dict, name: str) -> list[str]:
    values = body.get(name, [])
    if not isinstance(values, list) or len(values) > MAX_LABELS or not all(
            isinstance(v, str) and v.strip() and len(v) <= MAX_LABEL_LENGTH and is_text(v) for v in values):
        raise InvalidItem(f"{name} must be a list of at most {MAX_LABELS} non-empty strings "
                          f"of at most {MAX_LABEL_LENGTH} characters")
    return list(dict.fromkeys(v.strip() for v in values))


def _attributes(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict) or len(values) > MAX_ATTRIBUTES:
        raise InvalidItem(f"attributes must be an object of at most {MAX_ATTRIBUTES} entries")
    for key, value in values.items():
        if not isinstance(key, str) or not key or len(key) > MAX_LABEL_LENGTH or not is_text(key):
            raise InvalidItem(f"attribute names must be 1-{MAX_LABEL_LENGTH} characters")
        if isinstance(value, str):
            if len(value) > MAX_LABEL_LENGTH or not is_text(value):
                raise InvalidItem(f"attribute {key!r}: a string value is at most {MAX_LABEL_LENGTH} characters")
        elif not isinstance(value, bool) and not storable_number(value):
            raise InvalidItem(f"attribute {key!r} must be a string, a boolean or a number of at most "
                              f"{MAX_SIGNIFICANT_DIGITS} significant digits with magnitude between "
                              f"{SMALLEST_MAGNITUDE:g} and {MAGNITUDE_BOUND:g} (or 0)")
    return dict(values)


def storable_number(value: Any) -> bool:
    """A finite number every store can keep exactly as sent (see MAX_SIGNIFICANT_DIGITS)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 10 ** MAX_SIGNIFICANT_DIGITS
    return is_finite_number(value) and (value == 0 or SMALLEST_MAGNITUDE <= abs(value) < MAGNITUDE_BOUND)
