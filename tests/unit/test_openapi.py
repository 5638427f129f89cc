"""The OpenAPI spec Powertools generates from the API's handlers matches the template."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_stack.template import Template
from tests.api_events import LambdaContext, api_event

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(api_module) -> dict:
    return json.loads(api_module.SPEC)


def test_every_template_route_is_in_the_spec_and_nothing_else(spec):
    template = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    in_spec = {(method.upper(), path) for path, methods in spec["paths"].items() for method in methods}
    in_template = {(r.method, r.path) for r in template.routes()} - {("GET", "/openapi.json")}
    assert spec["openapi"].startswith("3.1") and in_spec == in_template


def test_admin_routes_say_so_and_limits_are_documented(spec):
    template = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    for route in template.routes():
        if route.path == "/openapi.json":
            continue
        operation = spec["paths"][route.path][route.method.lower()]
        wanted = "admin_key" if route.api == "RecsysAdminApi" else "client_key"
        assert operation["security"] == [{wanted: []}], (route.method, route.path)
    k = next(p for p in spec["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)
    names = {p["name"] for p in spec["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"]}
    assert {"exclude", "categories", "exclude_categories", "attributes", "min", "max", "diversity", "explore",
            "include_consumed", "context"} <= names
    rank = spec["components"]["schemas"]["RankBody"]["properties"]["item_ids"]
    assert rank["maxItems"] == 500


@pytest.mark.parametrize(("query", "message"), [
    ({"min": "year:abc"}, "min: year:abc is not a number"),
    ({"attributes": "nocolon"}, "attributes: expected comma-separated name:value, got 'nocolon'"),
    ({"exclude": ",".join(str(n) for n in range(501))}, "exclude: at most 500 values"),
])
def test_a_bad_filter_is_a_400_naming_it_on_every_list_route(api_module, query, message):
    """The filter parameters are one model (recsys.api_models.FilterQuery), checked once, before
    any store is read (these requests reach no AWS)."""
    module = api_module
    for path in ("/users/u-1/recommendations", "/items/1/similar"):
        answer = module.app.resolve(api_event(path, query), None)
        assert answer["statusCode"] == 400, (path, answer)
        assert json.loads(answer["body"]) == {"error": {"code": "bad_request", "message": message}}


@pytest.mark.parametrize("content_type", ["multipart/form-data", "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_a_415_in_the_apis_shape(api_module, content_type):
    """Every body the API takes is JSON: another content type (multipart without a boundary
    made the function raise, a 502) is refused before routing, in our error shape."""
    module = api_module
    event = {**api_event("/events", {}), "httpMethod": "POST", "body": '{"events": []}',
             "headers": {"x-api-key": "k", "Content-Type": content_type}}
    answer = module.lambda_handler(event, LambdaContext())
    assert answer["statusCode"] == 415
    assert json.loads(answer["body"])["error"]["code"] == "unsupported_media_type"
