"""What each route accepts, as types Powertools validates requests with and documents in
the OpenAPI spec. The domain checks again (recsys.events, recsys.catalog): these bound
sizes and shapes, the domain owns the meaning."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.catalog import MAX_ATTRIBUTES, MAX_DESCRIPTION, MAX_LABEL_LENGTH, MAX_LABELS, MAX_TITLE
from recsys.events import MAX_EVENTS_PER_REQUEST, MAX_ID_LENGTH, MAX_QUERY_LENGTH
from recsys.selection import Filters, parse_filters

MAX_BODY_BYTES = 1024 * 1024
MAX_K = 100
MAX_RANK_ITEMS = 500
MAX_LIST_CHARS = 8192

ID = {"min_length": 1, "max_length": MAX_ID_LENGTH, "pattern": r"^[A-Za-z0-9_.:@|/+=-]+$"}
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
