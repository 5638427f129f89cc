"""Every sample event in events/ through its function, in process, on moto's `mock_aws`.

The files are what `sam local invoke <Function> -e events/<file>` sends; here each
function's handler is imported fresh from its code dir, with the environment the
template gives it, against tables, stream and bucket provisioned from template.yaml.
"""
from __future__ import annotations

import base64
import copy
import importlib.util
import itertools
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import numpy as np
import pynamodb.connection.base
import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from moto import mock_aws

from local_stack.provision import provision
from local_stack.template import Template
from model_build.collaborative_training import TrainingConfig, train
from model_build.data import read_interactions, read_items
from model_build.publish import build_release
from recsys.adapters.artifacts import S3Releases as Releases
from recsys.adapters.aws import aws_client
from recsys.adapters.items import ItemRepository, item_model
from recsys.adapters.profiles import ProfileRepository, profile_model
from recsys.catalog import Item
from recsys.encoder import Encoder
from recsys.index import ItemIndex
from recsys.live import POPULARITY_REFRESH_SECONDS
from recsys.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
DATA = ROOT / "data" / "ml-latest-small"
STACK, REGION = "recsys-local", "us-east-1"
CATALOG_SIZE = 20
PUBLISHED_AT = 1_717_000_000.0
# A sample file goes to the function its name starts with; an api- one to the function that
# serves its route (the clients' ApiFunction or the AdminApiFunction).
FUNCTION_OF_PREFIX = {"api-": "ApiFunction", "kinesis-": "EventsFunction", "items-": "CatalogFunction",
                      "popularity-": "PopularityFunction"}
API_FUNCTIONS = ("ApiFunction", "AdminApiFunction")
SETTINGS_ENVIRONMENT = ("PROFILES_TABLE", "ITEMS_TABLE", "EVENTS_STREAM", "ARTIFACTS_BUCKET", "AWS_ENDPOINT_URL",
                        "RECSYS_MODEL_DIR")
SAMPLES = sorted(EVENTS.glob("*.json"))


def function_of(sample: Path) -> str | None:
    function = next((function for prefix, function in FUNCTION_OF_PREFIX.items() if sample.name.startswith(prefix)),
                    None)
    if function == "ApiFunction":
        event = json.loads(sample.read_text())
        return next((r.function for r in Template(TEMPLATE, STACK, REGION).routes()
                     if (r.method, r.path) == (event["httpMethod"], event["resource"])), function)
    return function


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def clear_caches() -> None:
    get_settings.cache_clear()
    aws_client.cache_clear()
    profile_model.cache_clear()
    item_model.cache_clear()


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


@dataclass(frozen=True)
class Catalog:
    items: list[Item]
    vectors: np.ndarray
    encoder: Encoder

    @property
    def model_version(self) -> str:
        return self.encoder.version


@pytest.fixture(scope="module")
def catalog(encoder_model_dir: Path) -> Catalog:
    """The first movies of the dataset, encoded once for the module."""
    encoder = Encoder(encoder_model_dir)
    items = read_items(DATA)[:CATALOG_SIZE]
    return Catalog(items, encoder.encode([item.text for item in items]), encoder)


@pytest.fixture(scope="module")
def release(catalog: Catalog, encoder_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A release as the build job makes one: the catalog's vectors, a collaborative model
    trained on the dataset's ratings of those items, the encoder."""
    index = ItemIndex(catalog.vectors.shape[1])
    index.extend([item.item_id for item in catalog.items], catalog.vectors,
                 np.arange(len(catalog.items), 0, -1, dtype=np.float32),
                 [item.categories for item in catalog.items])
    workdir = tmp_path_factory.mktemp("release")
    catalog_npz, collaborative_npz = workdir / "catalog.npz", workdir / "collaborative.npz"
    catalog_npz.write_bytes(index.to_npz(model_version=catalog.model_version))
    ratings = [row for row in read_interactions(DATA) if row.item_id in index.rows]
    collaborative_npz.write_bytes(train(ratings, index, TrainingConfig(factors=8, als_iterations=2)).to_npz())
    return build_release(catalog_npz, collaborative_npz, encoder_model_dir, PUBLISHED_AT)


_module_numbers = itertools.count()


class Stack:
    """The template's resources in moto, and its functions invoked the way Lambda does."""

    def __init__(self, template: Template, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                 model_dir: Path) -> None:
        self.template, self.aws, self.monkeypatch, self.model_dir = template, aws, monkeypatch, model_dir
        self.functions = template.functions()
        self._handlers: dict[str, Any] = {}

    def environment(self, function_id: str) -> dict[str, str]:
        return {**self.functions[function_id].environment, "AWS_REGION": REGION,
                "RECSYS_MODEL_DIR": str(self.model_dir)}

    def settings(self, function_id: str = "ApiFunction") -> Settings:
        return Settings.from_env(self.environment(function_id))

    def handler(self, function_id: str):
        """The function's handler, imported fresh (cold start) on first use in a test, then kept warm."""
        if function_id not in self._handlers:
            function = self.functions[function_id]
            for name in SETTINGS_ENVIRONMENT:
                self.monkeypatch.delenv(name, raising=False)
            for name, value in self.environment(function_id).items():
                self.monkeypatch.setenv(name, value)
            clear_caches()
            self.monkeypatch.syspath_prepend(str(function.code_dir))
            module_file, attribute = function.handler.rsplit(".", 1)
            module_name = f"sample_events_{function_id}_{next(_module_numbers)}"
            spec = importlib.util.spec_from_file_location(module_name, function.code_dir / f"{module_file}.py")
            module = importlib.util.module_from_spec(spec)
            self.monkeypatch.setitem(sys.modules, module_name, module)
            spec.loader.exec_module(module)
            self._handlers[function_id] = getattr(module, attribute)
        return self._handlers[function_id]

    def invoke(self, function_id: str, event: dict[str, Any]) -> Any:
        function = self.functions[function_id]
        context = LambdaContext(function.name, function.memory, self.template.get_att(function_id, "Arn"),
                                function.timeout)
        return self.handler(function_id)(copy.deepcopy(event), context)

    def call_api(self, name: str) -> tuple[int, Any]:
        response = self.invoke(function_of(EVENTS / name) or "ApiFunction", load(name))
        return response["statusCode"], json.loads(response["body"])

    def publish(self, catalog: Catalog, release: tuple[str, dict[str, bytes], dict[str, Any]]) -> None:
        """What model_build's publish stage does: the release, then the items with their vectors."""
        settings = self.settings()
        Releases(settings).publish(*release)
        ItemRepository(settings).put_many(zip(catalog.items, catalog.vectors, strict=True), catalog.model_version,
                                          now=PUBLISHED_AT)

    def seed_stream_images(self, event: dict[str, Any]) -> list[Item]:
        """Write the items of a stream batch as the API would have, so the table holds their text."""
        items = []
        repository = ItemRepository(self.settings("CatalogFunction"))
        for record in event["Records"]:
            image = DynamoDBRecord(record).dynamodb.new_image
            item = item_from_image(image)
            assert item.text_hash == image["text_hash"], f"{item.item_id}: text_hash in the sample is stale"
            repository.put(item, now=float(image["updated_at"]))
            items.append(item)
        return items

    def stored_item(self, item_id: str) -> dict[str, Any]:
        table = self.template.physical_name("ItemsTable")
        return self.aws["dynamodb"].get_item(TableName=table, Key={"item_id": {"S": item_id}},
                                             ConsistentRead=True)["Item"]

    def profile(self, user_id: str):
        return ProfileRepository(self.settings("EventsFunction")).get(user_id)


def item_from_image(image: dict[str, Any]) -> Item:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value

    return Item(item_id=image["item_id"], title=image["title"], description=image.get("description", ""),
                categories=list(image.get("categories", [])), tags=list(image.get("tags", [])),
                attributes={k: plain(v) for k, v in (image.get("attributes") or {}).items()})


_service_models = botocore.loaders.create_loader()


def session_sharing_service_models() -> botocore.session.Session:
    """A new botocore session, as boto3 and pynamodb would make, whose loader parses each
    service model's JSON once per module: every test clears the cached clients and pynamodb
    models and moto gives each test a new default session, so without this most of the
    suite's time goes to parsing those files again."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _service_models)
    return session


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch, encoder_model_dir: Path, catalog: Catalog, release):
    for name in (*SETTINGS_ENVIRONMENT, "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setattr(pynamodb.connection.base, "get_session", session_sharing_service_models)
    clear_caches()
    with mock_aws():
        boto3.setup_default_session(botocore_session=session_sharing_service_models())  # mock_aws restores it
        aws = {name: boto3.client(name, region_name=REGION)
               for name in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "s3")}
        template = Template(TEMPLATE, STACK, REGION)
        provision(template, aws)
        running = Stack(template, aws, monkeypatch, encoder_model_dir)
        running.publish(catalog, release)
        yield running
    clear_caches()


def kinesis_records(aws_stack: Stack) -> list[dict[str, Any]]:
    kinesis, name = aws_stack.aws["kinesis"], aws_stack.template.physical_name("EventsStream")
    records = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records += kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return records


# ---- the files themselves ------------------------------------------------------

def test_every_function_of_the_template_has_a_sample_event() -> None:
    functions = set(Template(TEMPLATE, STACK, REGION).of_type("AWS::Serverless::Function"))
    covered = {function_of(sample) for sample in SAMPLES}
    assert functions - covered == set(), "add events/<prefix>-*.json for these functions (and a prefix above)"
    assert None not in covered, f"a sample's name maps to no function: {[s.name for s in SAMPLES]}"
    assert covered <= functions


def test_every_route_has_a_sample_that_matches_it() -> None:
    template = Template(TEMPLATE, STACK, REGION)
    stage = template.parameters["Stage"]
    covered = set()
    for sample in SAMPLES:
        if function_of(sample) not in API_FUNCTIONS:
            continue
        event = json.loads(sample.read_text())
        route = next((r for r in template.routes() if (r.method, r.path) == (event["httpMethod"], event["resource"])),
                     None)
        assert route is not None, f"{sample.name}: {event['httpMethod']} {event['resource']} is not in the template"
        found = route.pattern.match(event["path"])
        assert found and found.groupdict() == (event["pathParameters"] or {}), sample.name
        context = event["requestContext"]
        assert (context["stage"], context["resourcePath"], context["httpMethod"], context["path"]) == (
            stage, event["resource"], event["httpMethod"], f"/{stage}{event['path']}"), sample.name
        assert event["headers"]["x-api-key"] == context["identity"]["apiKey"], sample.name
        assert event["multiValueHeaders"] == {k: [v] for k, v in event["headers"].items()}, sample.name
        query = event["queryStringParameters"]
        assert event["multiValueQueryStringParameters"] == (
            {k: [v] for k, v in query.items()} if query else None), sample.name
        covered.add((route.method, route.path))
    assert covered == {(r.method, r.path) for r in template.routes()}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_event_runs_through_its_function(aws_stack: Stack, sample: Path) -> None:
    function_id = function_of(sample)
    event = json.loads(sample.read_text())
    if function_id == "CatalogFunction":
        aws_stack.seed_stream_images(event)
    response = aws_stack.invoke(function_id, event)
    if function_id in API_FUNCTIONS:
        assert 200 <= response["statusCode"] < 300, response["body"]
    elif function_id == "PopularityFunction":
        assert response["counted"] > 0
    else:
        assert response == {"batchItemFailures": []}


# ---- what each sample does -----------------------------------------------------

def test_health_counts_the_published_catalog(aws_stack: Stack, catalog: Catalog, release) -> None:
    status, body = aws_stack.call_api("api-health.json")
    assert status == 200
    assert body == {"status": "ok", "items": CATALOG_SIZE, "model_version": catalog.model_version,
                    "release": release[0], "release_error": None, "refresh_error": None}


def test_put_item_then_get_item_reads_it_back(aws_stack: Stack) -> None:
    put = load("api-put-item.json")
    status, stored = aws_stack.call_api("api-put-item.json")
    assert status == 200
    assert stored == {"item_id": "zombie-night", "available": True, **json.loads(put["body"])}

    get = load("api-get-item.json")
    get["path"], get["pathParameters"] = "/items/zombie-night", {"item_id": "zombie-night"}
    response = aws_stack.invoke("ApiFunction", get)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == stored
    assert aws_stack.stored_item("zombie-night")["text_hash"]["S"] == item_from_image(stored).text_hash


def test_delete_item_leaves_a_tombstone_and_is_idempotent(aws_stack: Stack) -> None:
    """The sample's item is a published movie: gone for GET, deleted again alike, and kept in
    the table unavailable (so warm functions read its retirement and a release leaves it out)."""
    for _ in range(2):
        status, body = aws_stack.call_api("api-delete-item.json")
        assert (status, body) == (200, {"item_id": "2", "deleted": True})
    get = load("api-get-item.json")
    get["path"], get["pathParameters"] = "/items/2", {"item_id": "2"}
    assert aws_stack.invoke("ApiFunction", get)["statusCode"] == 404
    stored = aws_stack.stored_item("2")
    assert stored["available"] == {"BOOL": False} and "deleted_at" in stored


def test_get_item_returns_the_published_movie(aws_stack: Stack, catalog: Catalog) -> None:
    status, body = aws_stack.call_api("api-get-item.json")
    assert status == 200
    assert body == catalog.items[0].to_json()


def test_similar_items_leaves_out_the_item_itself(aws_stack: Stack, catalog: Catalog) -> None:
    status, body = aws_stack.call_api("api-similar-items.json")
    assert status == 200
    assert body["item_id"] == "1" and body["model_version"] == catalog.model_version
    ids = [entry["item_id"] for entry in body["items"]]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert "1" not in ids
    assert set(ids) <= {item.item_id for item in catalog.items}
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_posted_events_are_accepted_and_put_on_the_stream(aws_stack: Stack) -> None:
    posted = json.loads(load("api-post-events.json")["body"])["events"]
    status, body = aws_stack.call_api("api-post-events.json")
    assert status == 202
    assert body == {"accepted": 3, "errors": []}

    records = kinesis_records(aws_stack)
    assert [r["PartitionKey"] for r in records] == ["42", "42", "42"]
    on_stream = [json.loads(r["Data"]) for r in records]
    for sent, stored in zip(posted, on_stream, strict=True):
        assert {k: v for k, v in stored.items() if k != "timestamp"} == sent
        assert isinstance(stored["timestamp"], float)


def test_kinesis_batch_builds_the_users_profile(aws_stack: Stack) -> None:
    assert aws_stack.invoke("EventsFunction", load("kinesis-events.json")) == {"batchItemFailures": []}
    profile = aws_stack.profile("42")
    assert profile is not None
    assert profile.event_count == 3
    assert profile.consumed == {"1", "2"}
    assert profile.recent_items == ["2", "1"]
    assert profile.long_term is not None and profile.long_term.shape == (384,)


def test_kinesis_record_that_is_not_json_is_dead_lettered_alone_with_its_reason(aws_stack: Stack) -> None:
    event = load("kinesis-events.json")
    poison = event["Records"][1]["kinesis"]
    poison["data"] = base64.b64encode(b"search: space adventure").decode()
    response = aws_stack.invoke("EventsFunction", event)
    assert response == {"batchItemFailures": []}
    profile = aws_stack.profile("42")
    assert profile is not None and profile.event_count == 2
    assert profile.consumed == {"1", "2"}
    queue = aws_stack.environment("EventsFunction")["EVENTS_DLQ_URL"]
    (message,) = aws_stack.aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert body["sequenceNumber"] == poison["sequenceNumber"] and body["condition"] == "InvalidRecord"
    assert base64.b64decode(body["data"]) == b"search: space adventure" and "Expecting value" in body["reason"]


def test_recommendations_leave_out_what_the_user_consumed(aws_stack: Stack, catalog: Catalog) -> None:
    aws_stack.invoke("EventsFunction", load("kinesis-events.json"))
    consumed = aws_stack.profile("42").consumed
    assert consumed == {"1", "2"}

    status, body = aws_stack.call_api("api-recommendations.json")
    assert status == 200
    assert body["user_id"] == "42" and body["model_version"] == catalog.model_version
    assert re.fullmatch(r"[0-9a-f-]{36}", body["recommendation_id"])
    ids = [entry["item_id"] for entry in body["items"]]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not consumed & set(ids)
    assert set(ids) <= {item.item_id for item in catalog.items}


def test_items_stream_batch_encodes_the_inserted_and_modified_items(aws_stack: Stack, catalog: Catalog) -> None:
    event = load("items-stream.json")
    assert [r["eventName"] for r in event["Records"]] == ["INSERT", "MODIFY"]
    items = aws_stack.seed_stream_images(event)
    assert all("vector" not in aws_stack.stored_item(item.item_id) for item in items)

    assert aws_stack.invoke("CatalogFunction", event) == {"batchItemFailures": []}

    for item in items:
        stored = aws_stack.stored_item(item.item_id)
        vector = np.frombuffer(stored["vector"]["B"], dtype=np.float32)
        assert vector.shape == (384,)
        assert stored["vector_text_hash"]["S"] == stored["text_hash"]["S"] == item.text_hash
        assert stored["model_version"]["S"] == catalog.model_version
        assert float(vector @ catalog.encoder.encode([item.text])[0]) > 0.99

    # The API's live catalog picks the new vector up from the table.
    similar = load("api-similar-items.json")
    similar["path"], similar["pathParameters"] = "/items/zombie-night/similar", {"item_id": "zombie-night"}
    response = aws_stack.invoke("ApiFunction", similar)
    assert response["statusCode"] == 200, response["body"]
    assert "zombie-night" not in [entry["item_id"] for entry in json.loads(response["body"])["items"]]


def test_items_stream_does_not_re_encode_its_own_vector_write(aws_stack: Stack) -> None:
    """The function's own update comes back on the stream as a MODIFY whose image already
    carries the vector of its text; encoding it again would loop."""
    event = load("items-stream.json")
    event["Records"] = [r for r in event["Records"] if r["eventName"] == "MODIFY"]
    new_image = event["Records"][0]["dynamodb"]["NewImage"]
    new_image["vector_text_hash"] = {"S": new_image["text_hash"]["S"]}
    item = aws_stack.seed_stream_images(event)[0]
    marker = np.zeros(384, dtype=np.float32)
    marker[0] = 1.0
    ItemRepository(aws_stack.settings("CatalogFunction")).put(item, marker, "marker")

    assert aws_stack.invoke("CatalogFunction", event) == {"batchItemFailures": []}
    stored = aws_stack.stored_item(item.item_id)
    assert stored["model_version"]["S"] == "marker"
    assert np.array_equal(np.frombuffer(stored["vector"]["B"], dtype=np.float32), marker)


def test_kinesis_batch_moves_popularity_trending_and_cold_users(aws_stack: Stack, catalog: Catalog) -> None:
    status, body = aws_stack.call_api("api-trending.json")
    assert (status, body) == (200, {"category": "Comedy", "items": []}), "nothing trends before any event"
    cold = load("api-recommendations.json")
    cold["path"], cold["pathParameters"] = "/users/nobody/recommendations", {"user_id": "nobody"}
    cold["queryStringParameters"] = cold["multiValueQueryStringParameters"] = None  # no context: popularity only
    before = [e["item_id"] for e in json.loads(aws_stack.invoke("ApiFunction", cold)["body"])["items"]]
    assert before[:2] == ["1", "2"], "the snapshot's counts: the first movies count highest"

    event = load("popularity-kinesis.json")
    # A purchase and a 4.5-star rating of 5, a 90 s click on 2; a hide of 3 does not count.
    assert aws_stack.invoke("PopularityFunction", event) == {"records": 4, "counted": 3, "invalid": 0,
                                                             "already_applied": 0}
    s3, bucket = aws_stack.aws["s3"], aws_stack.environment("PopularityFunction")["ARTIFACTS_BUCKET"]
    stored = s3.get_object(Bucket=bucket, Key="popularity/shardId-000000000000.npz")
    assert aws_stack.invoke("PopularityFunction", event)["counted"] == 0
    again = s3.get_object(Bucket=bucket, Key="popularity/shardId-000000000000.npz")
    assert (again["ETag"], again["Body"].read()) == (stored["ETag"], stored["Body"].read())

    time.sleep(POPULARITY_REFRESH_SECONDS)  # the warm API function lists the counters at most this often
    status, body = aws_stack.call_api("api-trending.json")
    assert status == 200 and [e["item_id"] for e in body["items"]] == ["5"], "Jumanji (2) is not a comedy"
    everything = load("api-trending.json")
    everything["queryStringParameters"] = everything["multiValueQueryStringParameters"] = None
    body = json.loads(aws_stack.invoke("ApiFunction", everything)["body"])
    assert [e["item_id"] for e in body["items"]] == ["5", "2"]
    after = [e["item_id"] for e in json.loads(aws_stack.invoke("ApiFunction", cold)["body"])["items"]]
    assert after[:2] == ["5", "2"], "live counts replace the snapshot's"
