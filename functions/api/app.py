"""REST API: routes in, JSON out. Powertools validates every request against the types
below (the same types make GET /openapi.json); the work is in recsys.service."""
from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths

from recsys import wiring
from recsys.api_models import (
    CONTEXT,
    ID,
    MAX_BODY_BYTES,
    MAX_K,
    MAX_LABEL_LENGTH,
    EventsBody,
    FilterQuery,
    ItemBody,
    RankBody,
    refusal,
    validation_message,
)
from recsys.service import BadRequest, NotFound, Unavailable
from recsys.settings import get_settings
from recsys.tokens import TOKEN_HEADER, Forbidden, Unauthenticated

logger = Logger()
app = APIGatewayRestResolver(enable_validation=True)
recommender = wiring.recommender(get_settings())
CLIENT: list[dict[str, list[str]]] = [{"client_key": []}]
ADMIN: list[dict[str, list[str]]] = [{"admin_key": []}]
# Off (None) unless USER_TOKEN_SECRET is set: then the routes that name a user need x-user-token.
user_tokens = wiring.user_tokens(get_settings())
USER: list[dict[str, list[str]]] = CLIENT if user_tokens is None else [{"client_key": [], "user_token": []}]

UserId = Annotated[str, Path(**ID, description="The user's id.")]
ItemId = Annotated[str, Path(**ID, description="The item's id.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items (1-{MAX_K}).")]
Share = Annotated[float | None, Query(ge=0, le=1)]
Filtered = Annotated[FilterQuery, Query()]


def _error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def _error(status: int, code: str, message: str) -> Response:
    return Response(status_code=status, content_type="application/json", body=_error_body(code, message))


def _json(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


def _for_user(*user_ids: Any) -> None:
    """With user tokens on, a request goes on only with a token that binds every user it
    names (401 or 403 otherwise): a list whose reasons name a user's history items goes to
    that user alone, and events go into no one else's profile. Off, the key is trusted."""
    if user_tokens is not None:
        user_tokens.require(app.current_event.headers.get(TOKEN_HEADER), user_ids)


@app.get("/health", security=CLIENT, summary="Catalog size and model version; 503 while loading")
def health():
    body = recommender.health()
    return _json(503 if body["status"] == "loading" else 200, body)


@app.get("/openapi.json", include_in_schema=False)
def openapi():
    return _json(200, json.loads(SPEC))


@app.put("/items/<item_id>", security=ADMIN, summary="Create or replace an item (admin key)")
def put_item(item_id: ItemId, body: ItemBody):
    return recommender.put_item(item_id, body.model_dump())


@app.delete("/items/<item_id>", security=ADMIN,
            summary="Retire an item for good: out of every list, its events kept (admin key); idempotent")
def delete_item(item_id: ItemId):
    return recommender.delete_item(item_id)


@app.get("/items/<item_id>", security=CLIENT, summary="An item as stored")
def get_item(item_id: ItemId):
    return recommender.get_item(item_id)


@app.get("/items/<item_id>/similar", security=CLIENT, summary="Items nearest to an item, with filters")
def similar_items(item_id: ItemId, filters: Filtered, k: K = 10):
    return recommender.similar(item_id, k, filters.filters())


@app.post("/events", security=USER, summary="Record interaction events (up to 500)")
def post_events(body: EventsBody):
    _for_user(*body.user_ids())
    return _json(202, recommender.submit_events(body.events))


@app.get("/users/<user_id>/recommendations", security=USER,
         summary="Recommendations for a user, with filters, diversity, exploration and reasons")
def recommendations(user_id: UserId, filters: Filtered, k: K = 10,
                    context: Annotated[str | None, Query(**CONTEXT)] = None,
                    include_consumed: Annotated[bool, Query(description="Keep items the user consumed.")] = False,
                    diversity: Share = None, explore: Share = None):
    _for_user(user_id)
    return recommender.recommend(user_id, k, context, filters.filters(include_consumed), diversity, explore)


@app.post("/users/<user_id>/rank", security=USER, summary="Rerank a list of up to 500 items for a user")
def rank(user_id: UserId, body: RankBody):
    _for_user(user_id)
    return recommender.rank(user_id, body.item_ids, body.context)


@app.get("/trending", security=CLIENT, summary="Items whose recent pace most exceeds their usual pace")
def trending(k: K = 10, category: Annotated[str | None, Query(min_length=1, max_length=MAX_LABEL_LENGTH)] = None):
    return recommender.trending(k, category)


@app.get("/users/<user_id>", security=ADMIN, summary="What the system holds about a user (admin key)")
def get_user(user_id: UserId):
    return recommender.user_data(user_id)


@app.delete("/users/<user_id>", security=ADMIN, summary="Erase everything held about a user (admin key)")
def delete_user(user_id: UserId):
    return recommender.erase_user(user_id)


@app.get("/metrics", security=ADMIN, summary="Impressions, clicks, CTR, conversions per variant and day (admin key)")
def metrics(start: Annotated[date | None, Query(alias="from", description="First day (UTC); default 30 days ago.")]
            = None,
            end: Annotated[date | None, Query(alias="to", description="Last day (UTC); default today.")] = None,
            variant: Annotated[str | None, Query(min_length=1, max_length=64)] = None):
    return recommender.metrics(start, end, variant)


@app.exception_handler(RequestValidationError)
def invalid_request(error: RequestValidationError):
    return _error(400, "bad_request", validation_message(list(error.errors())))


@app.exception_handler(BadRequest)
def bad_request(error: BadRequest):
    return _error(400, "bad_request", str(error))


@app.exception_handler(NotFound)
def not_found(error: NotFound):
    return _error(404, "not_found", str(error))


@app.exception_handler(Unauthenticated)
def unauthenticated(error: Unauthenticated):
    return Response(status_code=401, content_type="application/json",
                    headers={"WWW-Authenticate": f'UserToken header="{TOKEN_HEADER}"'},
                    body=_error_body(error.code, str(error)))


@app.exception_handler(Forbidden)
def forbidden(error: Forbidden):
    return _error(403, error.code, str(error))


@app.exception_handler(Unavailable)
def unavailable(error: Unavailable):
    return Response(status_code=503, content_type="application/json", headers={"Retry-After": "1"},
                    body=_error_body("unavailable", str(error)))


@app.not_found
def no_route(_error_):
    method, path = app.current_event.http_method, app.current_event.path
    allowed = sorted({m.upper() for pattern, methods in ROUTES for m in methods if pattern.fullmatch(path)})
    if allowed:
        return Response(status_code=405, content_type="application/json", headers={"Allow": ", ".join(allowed)},
                        body=_error_body("method_not_allowed", f"{path} takes {', '.join(allowed)}, not {method}"))
    return _error(404, "no_route", f"no route {method} {path}")


SPEC = app.get_openapi_json_schema(
    title="recsys", version="1.0.0",
    description="Real-time recommendations with filters, diversity, exploration, reasons and A/B metrics. "
                "Client routes take the clients' key, admin routes the admin key, both in x-api-key."
                + ("" if user_tokens is None else
                   f" Routes that name a user also take {TOKEN_HEADER}, a token your server signs for that user."),
    security_schemes={"client_key": APIKey(name="x-api-key", in_=APIKeyIn.header),  # type: ignore[call-arg]
                      "admin_key": APIKey(name="x-api-key", in_=APIKeyIn.header),  # type: ignore[call-arg]
                      **({} if user_tokens is None else {"user_token": APIKey(  # type: ignore[call-arg]
                          name=TOKEN_HEADER, in_=APIKeyIn.header,
                          description="<user_id>.<expiry unix seconds>.<base64url HMAC-SHA256>, for the user "
                                      "the request names (README, User tokens)")})})
# Each path of the spec as a pattern, with its methods: a known path asked with another method is a 405.
ROUTES = [(re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path))), methods)
          for path, methods in json.loads(SPEC)["paths"].items()]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event, context):
    # Before routing: Powertools' request validation parses the body before any middleware runs.
    if len(event.get("body") or "") > MAX_BODY_BYTES:
        return _refused(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    content_type = next((str(v) for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), "")
    if event.get("body") and content_type and not content_type.strip().lower().startswith("application/json"):
        return _refused(415, "unsupported_media_type", f"the body must be application/json, not {content_type[:100]}")
    refused = refusal(event.get("pathParameters"), event.get("multiValueQueryStringParameters"), event.get("body"),
                      per_event=event.get("path") == "/events")
    if refused:
        return _refused(400, "bad_request", refused)
    return app.resolve(event, context)


def _refused(status: int, code: str, message: str) -> dict[str, Any]:
    """An answer given before routing, in the API's error shape."""
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": _error_body(code, message)}
