"""What each route accepts, as types Powertools validates requests with and documents in
the OpenAPI spec. The domain checks again (recsys.events, recsys.catalog): these bound
sizes and shapes, the domain owns the meaning."""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.catalog import MAX_ATTRIBUTES, MAX_DESCRIPTION, MAX_LABEL_LENGTH, MAX_LABELS, MAX_TITLE
from recsys.events import ID_CHARACTERS, ID_PATTERN, MAX_EVENTS_PER_REQUEST, MAX_ID_LENGTH, MAX_QUERY_LENGTH, is_text
from recsys.selection import Filters, parse_filters

MAX_BODY_BYTES = 1024 * 1024
MAX_K = 100
MAX_RANK_ITEMS = 500
MAX_LIST_CHARS = 8192
# No body the API takes nests deeper than 4 levels ({"events": [{"item_ids": [...]}]}); the
# bound leaves room and keeps a hostile body (100,000 brackets) from exhausting the stack.
MAX_JSON_DEPTH = 32

ID = {"min_length": 1, "max_length": MAX_ID_LENGTH, "pattern": ID_PATTERN.pattern}
CONTEXT = {"max_length": MAX_QUERY_LENGTH,
           "description": "Text that steers the list (a search, the page's topic); it is encoded like an item."}
ID_LIST = {"max_length": MAX_LIST_CHARS, "description": "Comma-separated item ids to leave out."}
LABEL_LIST = {"max_length": MAX_LIST_CHARS,
              "description": "Comma-separated categories (exact): `categories` keeps items with any of them, "
                             "`exclude_categories` drops items with any of them."}
ATTRIBUTE_FILTER = {"max_length": MAX_LIST_CHARS,
                    "description": "Attribute equality, comma-separated `name:value` (e.g. `language:en,year:1995`); "
                                   "an item must match every one."}
RANGE_FILTER = {"max_length": MAX_LIST_CHARS,
                "description": "Numeric attribute bound, comma-separated `name:number` "
                               "(`min=year:1990&max=year:1999`); items without a numeric value for the attribute "
                               "are left out."}

Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH)]
AttributeValue = str | bool | int | float


class FilterQuery(BaseModel):
    """The filter parameters a list route takes, checked and parsed once, here
    (recsys.selection.parse_filters); a bad one is a 400 naming it."""
    model_config = ConfigDict(extra="ignore")  # the route's other parameters are its own
    exclude: Annotated[str | None, Field(**ID_LIST)] = None
    categories: Annotated[str | None, Field(**LABEL_LIST)] = None
    exclude_categories: Annotated[str | None, Field(**LABEL_LIST)] = None
    attributes: Annotated[str | None, Field(**ATTRIBUTE_FILTER)] = None
    min: Annotated[str | None, Field(**RANGE_FILTER)] = None
    max: Annotated[str | None, Field(**RANGE_FILTER)] = None

    @model_validator(mode="after")
    def _parses(self) -> FilterQuery:
        self.filters()
        return self

    def filters(self, include_consumed: bool = False) -> Filters:
        return parse_filters(self.exclude, self.categories, self.exclude_categories, self.attributes, self.min,
                             self.max, include_consumed)


class ItemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""
    categories: Annotated[list[Label], Field(max_length=MAX_LABELS)] = []
    tags: Annotated[list[Label], Field(max_length=MAX_LABELS)] = []
    attributes: Annotated[dict[Label, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] = {}
    available: Annotated[bool, Field(description="false retires the item (sold out, withdrawn): it leaves every "
                                                 "list within seconds; true brings it back.")] = True


class EventsBody(BaseModel):
    """Each event is checked on its own (a bad one is refused alone, with its reason): fields
    event_id, user_id, type, item_id, timestamp, dwell_seconds, value, query, recommendation_id."""
    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[Any], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]

    def user_ids(self) -> list[Any]:
        """The user_id each event gives (what a user token must bind); an event without one
        is refused on its own (recsys.events.parse_event)."""
        return [event["user_id"] for event in self.events if isinstance(event, dict) and "user_id" in event]


class RankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: Annotated[list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]],
                        Field(min_length=1, max_length=MAX_RANK_ITEMS,
                              description="The items to order; unknown ids are reported, not fatal.")]
    context: Annotated[str | None, Field(max_length=MAX_QUERY_LENGTH)] = None


def validation_message(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors as one line: `where: what` for each, the first five."""
    parts = []
    for error in errors[:5]:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "filters")]
        where = ".".join(location) or "body"
        if error.get("type") == "json_invalid":
            parts.append("the body must be valid JSON")
            continue
        what = "unknown field" if error.get("type") == "extra_forbidden" else \
            str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "value_error" and where == "body" and not location:
            parts.append(what)  # a model's own check names the parameter itself
            continue
        parts.append(f"{where}: {what}")
    return "; ".join(parts) or "the request is not valid"


def refusal(path_parameters: dict[str, Any] | None, query: dict[str, list[str]] | None, body: str | None,
            per_event: bool = False) -> str | None:
    """Why a request is refused before routing, or None. What Powertools would turn into a
    500 or route wrongly: a path id holding "/" (an encoded %2F: the route is chosen on the
    decoded path, so GET /items/1%2Fsimilar would answer for item 1), text with lone surrogates
    (nothing downstream can encode it), a body nested deeper than MAX_JSON_DEPTH or one that is
    not JSON at all (an integer of over 4,300 digits included). `per_event`: the body's events
    are checked one by one (recsys.events.parse_event), so one bad event is refused alone."""
    for name, value in (path_parameters or {}).items():
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            return f"{name}: ids are 1-{MAX_ID_LENGTH} characters of {ID_CHARACTERS}"
    for name, values in (query or {}).items():
        if not is_text(name) or not all(is_text(v) for v in values or ()):
            return f"{_printable(name)}: the value is not valid Unicode text"
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except RecursionError:
        return f"the body nests deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return "the body must be valid JSON"
    if _depth_over(parsed, MAX_JSON_DEPTH):
        return f"the body nests deeper than {MAX_JSON_DEPTH} levels"
    if not per_event:
        try:  # one pass in C over every string, keys included
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "the body holds text that is not valid Unicode (a lone surrogate such as \\ud800)"
    return None


def _depth_over(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than `limit`, without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:100]
