"""local_stack.template: what the local stack reads from the real template.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest

from local_stack.template import Route, Template, TemplateError

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"ApiFunction": "functions/api", "AdminApiFunction": "functions/api", "EventsFunction": "functions/events",
             "CatalogFunction": "functions/catalog", "PopularityFunction": "functions/popularity"}


@pytest.fixture(scope="module")
def template() -> Template:
    loaded = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    # What provisioning would learn from moto: a queue's URL.
    loaded.attributes[("EventsDeadLetterQueue", "QueueUrl")] = "http://127.0.0.1/123456789012/dlq"
    return loaded


def test_the_functions_and_their_code(template: Template) -> None:
    functions = template.functions()
    assert set(functions) == set(FUNCTIONS)
    for logical_id, code in FUNCTIONS.items():
        function = functions[logical_id]
        assert function.name == f"recsys-local-{logical_id}"
        assert function.code_dir.resolve() == ROOT / code
        assert (function.code_dir / "app.py").is_file()
        assert function.handler == "app.lambda_handler"
        assert function.layer_dirs == [ROOT / "layers/recsys", ROOT / "layers/encoder"]
        assert all(layer.is_dir() for layer in function.layer_dirs)
        assert function.timeout > 0 and function.memory >= 128


def test_environment_names_the_stacks_resources(template: Template) -> None:
    api = template.functions()["ApiFunction"].environment
    assert api["PROFILES_TABLE"] == "recsys-local-ProfilesTable"
    assert api["ITEMS_TABLE"] == "recsys-local-ItemsTable"
    assert api["EVENTS_STREAM"] == "recsys-local-EventsStream"
    assert api["ARTIFACTS_BUCKET"] == "recsys-local-artifactsbucket"
    assert api["POWERTOOLS_SERVICE_NAME"] == "recsys"  # from Globals
    catalog = template.functions()["CatalogFunction"].environment
    assert catalog["ITEMS_TABLE"] == "recsys-local-ItemsTable"
    assert "EVENTS_STREAM" not in catalog
    popularity = template.functions()["PopularityFunction"].environment
    assert popularity["ARTIFACTS_BUCKET"] == "recsys-local-artifactsbucket"


def test_the_api_routes(template: Template) -> None:
    routes = {(r.method, r.path) for r in template.routes()}
    assert routes == {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/items/{item_id}"),
                      ("PUT", "/items/{item_id}"), ("DELETE", "/items/{item_id}"), ("GET", "/items/{item_id}/similar"),
                      ("POST", "/events"),
                      ("GET", "/users/{user_id}/recommendations"), ("POST", "/users/{user_id}/rank"),
                      ("GET", "/trending"), ("GET", "/users/{user_id}"), ("DELETE", "/users/{user_id}"),
                      ("GET", "/metrics")}
    assert all(r.api_key_required for r in template.routes())
    admin = {(r.method, r.path) for r in template.routes() if r.api == "RecsysAdminApi"}
    assert admin == {("PUT", "/items/{item_id}"), ("DELETE", "/items/{item_id}"), ("GET", "/users/{user_id}"),
                     ("DELETE", "/users/{user_id}"), ("GET", "/metrics")}
    # Each API's routes reach its own function (its own role): the admin routes never the clients' one.
    assert {(r.api, r.function) for r in template.routes()} == {("RecsysApi", "ApiFunction"),
                                                                ("RecsysAdminApi", "AdminApiFunction")}
    assert {r.api for r in template.routes()} == {"RecsysApi", "RecsysAdminApi"}


def route(template: Template, method: str, path: str) -> Route:
    return next(r for r in template.routes() if (r.method, r.path) == (method, path))


def test_path_parameters(template: Template) -> None:
    similar = route(template, "GET", "/items/{item_id}/similar").pattern
    item = route(template, "GET", "/items/{item_id}").pattern
    assert similar.match("/items/abc/similar").groupdict() == {"item_id": "abc"}
    assert similar.match("/items/abc") is None
    assert item.match("/items/abc").groupdict() == {"item_id": "abc"}
    assert item.match("/items/abc/similar") is None
    assert item.match("/items/") is None
    recs = route(template, "GET", "/users/{user_id}/recommendations").pattern
    assert recs.match("/users/u:1/recommendations").group("user_id") == "u:1"


def test_a_greedy_path_parameter() -> None:
    assert Route("GET", "/files/{path+}", "F", False).pattern.match("/files/a/b.txt").group("path") == "a/b.txt"


def test_event_sources(template: Template) -> None:
    sources = {s.function: s for s in template.event_sources()}
    assert {(f, s.kind, s.source_logical_id) for f, s in sources.items()} == {
        ("EventsFunction", "Kinesis", "EventsStream"), ("PopularityFunction", "Kinesis", "EventsStream"),
        ("CatalogFunction", "DynamoDB", "ItemsTable")}
    events, counters, catalog = sources["EventsFunction"], sources["PopularityFunction"], sources["CatalogFunction"]
    assert events.properties["BatchSize"] == 500
    assert counters.properties["BatchSize"] == 5000 and counters.properties["MaximumBatchingWindowInSeconds"] == 1
    assert catalog.properties["BatchSize"] == 100
    assert len(catalog.properties["FilterCriteria"]["Filters"]) == 2  # what they let through: test_filters.py
    for source in sources.values():
        props = source.properties
        assert props["StartingPosition"] == "TRIM_HORIZON"
        assert props["BisectBatchOnFunctionError"] is True
        assert props["MaximumRetryAttempts"] >= 0 and props["MaximumRecordAgeInSeconds"] > 0
    assert "ReportBatchItemFailures" in events.properties["FunctionResponseTypes"]
    assert "ReportBatchItemFailures" in catalog.properties["FunctionResponseTypes"]
    assert "FunctionResponseTypes" not in counters.properties, "a batch is applied whole or not at all"


def test_arns_and_provisioned_attributes(template: Template) -> None:
    kinesis = next(s for s in template.event_sources() if s.function == "EventsFunction")
    destination = kinesis.properties["DestinationConfig"]["OnFailure"]["Destination"]
    assert template.resolve(destination) == "arn:aws:sqs:us-east-1:123456789012:recsys-local-EventsDeadLetterQueue"
    assert template.resolve({"Fn::GetAtt": ["EventsStream", "Arn"]}) == \
        "arn:aws:kinesis:us-east-1:123456789012:stream/recsys-local-EventsStream"
    fresh = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    with pytest.raises(TemplateError):
        fresh.resolve({"Ref": "EventsDeadLetterQueue"})


def test_refs_that_need_provisioning_resolve_once_known() -> None:
    template = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    url = "http://localhost:5000/123456789012/recsys-local-EventsDeadLetterQueue"
    template.attributes[("EventsDeadLetterQueue", "QueueUrl")] = url
    template.attributes[("ItemsTable", "StreamArn")] = "arn:stream"
    assert template.resolve({"Ref": "EventsDeadLetterQueue"}) == url
    assert template.resolve({"Fn::GetAtt": "ItemsTable.StreamArn"}) == "arn:stream"
    assert template.resolve({"Fn::Sub": "${ItemsTable.StreamArn}/x"}) == "arn:stream/x"


def test_conditions_and_no_value() -> None:
    template = Template(ROOT / "template.yaml", "recsys-local", "us-east-1")
    assert "AlarmActions" not in template.properties("ApiFunctionErrorsAlarm")
    topic = Template(ROOT / "template.yaml", "recsys-local", "us-east-1",
                     parameters={"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:alarms"})
    assert topic.properties("ApiFunctionErrorsAlarm")["AlarmActions"] == \
        ["arn:aws:sns:us-east-1:123456789012:alarms"]
    assert template.properties("ApiFunctionLogGroup")["LogGroupName"] == "/aws/lambda/recsys-local-ApiFunction"


def test_gateway_responses_are_the_templates(template: Template) -> None:
    """What API Gateway answers itself: the API's GatewayResponses (a missing route or
    method is MISSING_AUTHENTICATION_TOKEN, mapped to 404 no_route here), else DEFAULT_4XX,
    else API Gateway's own 403 {"message": ...}."""
    import json

    for api in ("RecsysApi", "RecsysAdminApi"):
        missing = template.gateway_response(api, "MISSING_AUTHENTICATION_TOKEN")
        assert missing.status == 404 and json.loads(missing.body) == {"error": {"code": "no_route",
                                                                                "message": "no such route"}}
        assert missing.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        key = template.gateway_response(api, "INVALID_API_KEY")
        assert key.status == 403 and json.loads(key.body)["error"]["code"] == "forbidden"
        large = template.gateway_response(api, "REQUEST_TOO_LARGE")
        assert large.status == 413 and json.loads(large.body) == {"error": {"code": "REQUEST_TOO_LARGE",
                                                                            "message": "Request Too Long"}}
    bare = template.gateway_response("NoSuchApi", "MISSING_AUTHENTICATION_TOKEN")
    assert bare.status == 403 and json.loads(bare.body) == {"message": "Missing Authentication Token"}
