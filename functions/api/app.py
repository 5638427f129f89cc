"""REST API: routes in, JSON out. The work is in recsys.service."""
from __future__ import annotations

import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths

from recsys.service import BadRequest, NotFound, Recommender
from recsys.settings import get_settings

logger = Logger()
app = APIGatewayRestResolver()
recommender = Recommender(get_settings())


def _error(status: int, code: str, message: str) -> Response:
    return Response(status_code=status, content_type="application/json",
                    body=json.dumps({"error": {"code": code, "message": message}}))


def _body():
    try:
        return app.current_event.json_body
    except (json.JSONDecodeError, TypeError):
        raise BadRequest("the body must be valid JSON") from None


@app.get("/health")
def health():
    return recommender.health()


@app.put("/items/<item_id>")
def put_item(item_id: str):
    return recommender.put_item(item_id, _body())


@app.get("/items/<item_id>")
def get_item(item_id: str):
    return recommender.get_item(item_id)


@app.get("/items/<item_id>/similar")
def similar_items(item_id: str):
    return recommender.similar(item_id, app.current_event.get_query_string_value("k"))


@app.post("/events")
def post_events():
    return Response(status_code=202, content_type="application/json",
                    body=json.dumps(recommender.submit_events(_body())))


@app.get("/users/<user_id>/recommendations")
def recommendations(user_id: str):
    query = app.current_event.get_query_string_value
    return recommender.recommend(user_id, query("k"), query("context"))


@app.get("/trending")
def trending():
    query = app.current_event.get_query_string_value
    return recommender.trending(query("k"), query("category"))


@app.exception_handler(BadRequest)
def bad_request(error: BadRequest):
    return _error(400, "bad_request", str(error))


@app.exception_handler(NotFound)
def not_found(error: NotFound):
    return _error(404, "not_found", str(error))


@app.not_found
def no_route(_error_):
    return _error(404, "no_route", f"no route {app.current_event.http_method} {app.current_event.path}")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event, context):
    return app.resolve(event, context)
