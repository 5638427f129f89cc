"""Least privilege: each function's role grants exactly the IAM actions its code calls, on
exactly the resources it calls them on.

What the code calls is recorded, not listed by hand: every botocore call (boto3's and
pynamodb's clients alike) goes through `BaseClient._make_api_call`, which this test wraps to
note (function, operation, parameters, error code) while each function's handler, imported
fresh with the environment the template gives it, runs its routes or stream batches against
moto (`mock_aws`), on resources provisioned from template.yaml. Each call becomes the IAM
action and resource ARN that authorises it (`required`); the role is the function's
`Policies` statements, resolved by local_stack.template to the same physical names. The test
fails on a wildcard action or resource, on a call no statement grants, and on a granted
(action, resource) no call used.

A scenario below that stops exercising a code path makes that path's grant "unused": add
the path to the scenario rather than widen the role.
"""
from __future__ import annotations

import base64
import copy
import fnmatch
import importlib.util
import itertools
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws

from local_stack.provision import provision
from local_stack.template import ACCOUNT, Template
from model_build.collaborative_training import TrainingConfig, train
from model_build.data import Interaction
from recsys import wiring
from recsys.adapters.artifacts import S3Releases
from recsys.adapters.aws import aws_client
from recsys.adapters.items import ItemRepository, item_model
from recsys.adapters.profiles import profile_model
from recsys.catalog import Item
from recsys.index import ItemIndex
from recsys.release import COLLABORATIVE, ITEM_VECTORS, build_manifest
from recsys.settings import Settings, get_settings
from tests.api_events import LambdaContext

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
STACK, REGION = "recsys-iam", "us-east-1"
# Operations whose IAM action is not "<service>:<OperationName>".
IAM_ACTION = {("s3", "ListObjectsV2"): "s3:ListBucket", ("s3", "ListObjects"): "s3:ListBucket",
              ("s3", "HeadObject"): "s3:GetObject", ("s3", "HeadBucket"): "s3:ListBucket",
              ("s3", "DeleteObjects"): "s3:DeleteObject"}
S3_OBJECT_OPERATIONS = {"GetObject", "HeadObject", "PutObject", "DeleteObject"}
# S3 answers a GET of a missing key with 404 NoSuchKey only to a caller allowed s3:ListBucket
# on the bucket (403 AccessDenied otherwise), and the code relies on NoSuchKey.
MISSING_KEY_ERRORS = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class Need:
    """One permission a call needed: the action, the resource ARN and the condition keys the
    request carries (s3:prefix for a list)."""
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


@dataclass
class Recorder:
    function: str | None = None
    calls: dict[str, list[tuple[str, str, dict[str, Any], str | None]]] = field(default_factory=dict)

    def record(self, service: str, operation: str, params: dict[str, Any], error: str | None) -> None:
        if self.function is not None:
            self.calls.setdefault(self.function, []).append((service, operation, params, error))


def required(service: str, operation: str, params: dict[str, Any], error: str | None) -> list[Need]:
    """The permissions one recorded call needed."""
    action = IAM_ACTION.get((service, operation), f"{service}:{operation}")
    if service == "dynamodb":
        tables = list(params.get("RequestItems", {})) or [params["TableName"]]
        index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
        return [Need(action, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}{index}") for t in tables]
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        if operation == "DeleteObjects":
            return [Need(action, f"{bucket}/{o['Key']}") for o in params["Delete"]["Objects"]]
        if operation in S3_OBJECT_OPERATIONS:
            needs = [Need(action, f"{bucket}/{params['Key']}")]
            if error in MISSING_KEY_ERRORS:
                needs.append(Need("s3:ListBucket", bucket))
            return needs
        prefix = (("s3:prefix", params["Prefix"]),) if "Prefix" in params else ()
        return [Need(action, bucket, prefix)]
    if service == "kinesis":
        stream = params.get("StreamARN") or f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{params['StreamName']}"
        return [Need(action, stream)]
    if service == "sqs":
        return [Need(action, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{params['QueueUrl'].rstrip('/').rsplit('/', 1)[-1]}")]
    raise AssertionError(f"no IAM mapping for {service}.{operation}: add one to required()")


@dataclass(frozen=True)
class Grant:
    sid: str
    action: str
    resource: str
    condition: dict[str, Any]

    def allows(self, need: Need) -> bool:
        return need.action == self.action and fnmatch.fnmatchcase(need.resource, self.resource) \
            and condition_holds(self.condition, dict(need.context))


def condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, keys in condition.items():
        if operator not in ("StringLike", "StringEquals"):
            raise AssertionError(f"condition operator {operator} is not evaluated here: add it to condition_holds")
        for key, patterns in keys.items():
            if key not in context:
                return False
            patterns = patterns if isinstance(patterns, list) else [patterns]
            match = fnmatch.fnmatchcase if operator == "StringLike" else str.__eq__
            if not any(match(context[key], p) for p in patterns):
                return False
    return True


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(template: Template, function: str) -> list[Grant]:
    """The function's role as (action, resource) pairs, resolved to this stack's names."""
    found = []
    for policy in template.resources[function]["Properties"].get("Policies", []):
        for statement in as_list(template.resolve(policy)["Statement"]):
            assert statement.get("Effect") == "Allow" and "NotAction" not in statement \
                and "NotResource" not in statement, (function, statement)
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    found.append(Grant(statement.get("Sid", "?"), action, resource, statement.get("Condition", {})))
    return found


# ---- the static rules: explicit statements, no wildcard --------------------------------

ARN_OF_RESOURCE = re.compile(r"^\$\{(\w+)\.(Arn|StreamArn)\}(/[A-Za-z0-9_.=-]+)*(/[A-Za-z0-9_.=-]+/\*)?$")


def test_every_policy_is_an_explicit_statement_without_wildcards() -> None:
    """No managed policy, no SAM policy template (each grants more than the code calls), no
    '*' in an action, and every resource is one of this template's resources: its ARN, or
    under it a literal path (an index, a key prefix ending in /*)."""
    template = Template(ROOT / "template.yaml", STACK, REGION)
    for function, resource in template.of_type("AWS::Serverless::Function").items():
        policies = resource["Properties"].get("Policies", [])
        assert policies, f"{function} has no Policies: SAM would give it none, write what it calls"
        for policy in policies:
            assert isinstance(policy, dict) and set(policy) == {"Statement"}, (function, policy)
            for statement in as_list(policy["Statement"]):
                for action in as_list(statement["Action"]):
                    assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), (function, statement["Sid"], action)
                for resource_arn in as_list(statement["Resource"]):
                    assert isinstance(resource_arn, dict), (function, statement["Sid"], resource_arn)
                    if "Fn::GetAtt" in resource_arn:
                        target, attribute = resource_arn["Fn::GetAtt"]
                        assert attribute in ("Arn", "StreamArn"), (function, resource_arn)
                    else:
                        sub = resource_arn.get("Fn::Sub")
                        assert isinstance(sub, str), (function, statement["Sid"], resource_arn)
                        match = ARN_OF_RESOURCE.fullmatch(sub)
                        assert match, (function, statement["Sid"], sub)
                        target = match.group(1)
                    assert target in template.resources, (function, target)


@pytest.mark.parametrize("broad", [
    {"Sid": "A", "Effect": "Allow", "Action": ["dynamodb:*"], "Resource": {"Fn::GetAtt": ["ItemsTable", "Arn"]}},
    {"Sid": "A", "Effect": "Allow", "Action": ["s3:Get*"], "Resource": {"Fn::Sub": "${ArtifactsBucket.Arn}/x/*"}},
    {"Sid": "A", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
    {"Sid": "A", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": {"Fn::Sub": "${ArtifactsBucket.Arn}/*"}},
    {"Sid": "A", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": {"Fn::Sub": "arn:aws:s3:::*"}},
])
def test_the_static_rules_refuse_a_wildcard(broad: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules above are not vacuous: each of these statements fails them."""
    real = Template.__init__

    def with_broad(self: Template, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        self.resources["CatalogFunction"]["Properties"]["Policies"] = [{"Statement": [broad]}]

    monkeypatch.setattr(Template, "__init__", with_broad)
    with pytest.raises(AssertionError):
        test_every_policy_is_an_explicit_statement_without_wildcards()


# ---- what each function's code calls, recorded -----------------------------------------

_modules = itertools.count()


def clear_caches() -> None:
    for cached in (get_settings, aws_client, item_model, profile_model):
        cached.cache_clear()


class Stack:
    """The template's resources in moto; each function's handler imported fresh (a cold
    start) with the environment the template gives it, its AWS calls recorded as its own."""

    def __init__(self, template: Template, monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
        self.template, self.monkeypatch, self.recorder = template, monkeypatch, recorder
        self.functions = template.functions()
        self.handlers: dict[str, Any] = {}

    def environment(self, function: str) -> dict[str, str]:
        return {**self.functions[function].environment, "AWS_REGION": REGION}

    def cold_start(self, function: str) -> None:
        for name in {name for other in self.functions for name in self.functions[other].environment}:
            self.monkeypatch.delenv(name, raising=False)
        for name, value in self.environment(function).items():
            self.monkeypatch.setenv(name, value)
        clear_caches()
        code = self.functions[function].code_dir
        module_name = f"iam_{function}_{next(_modules)}"
        spec = importlib.util.spec_from_file_location(module_name, code / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, module_name, module)
        self.recorder.function = function
        try:
            spec.loader.exec_module(module)
        finally:
            self.recorder.function = None
        self.handlers[function] = module.lambda_handler

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        self.recorder.function = function
        try:
            return self.handlers[function](copy.deepcopy(event), LambdaContext())
        finally:
            self.recorder.function = None

    def api(self, function: str, sample: str, **changes: Any) -> tuple[int, Any]:
        event = {**json.loads((EVENTS / sample).read_text()), **changes}
        route = (event["httpMethod"], event["resource"])
        assert route in self.routes(function), f"{sample}: {route} is not a route of {function}"
        response = self.invoke(function, event)
        return response["statusCode"], json.loads(response["body"]) if response.get("body") else None

    def routes(self, function: str) -> set[tuple[str, str]]:
        return {(r.method, r.path) for r in self.template.routes() if r.function == function}


def kinesis_batch(payloads: list[bytes], first_sequence: int) -> dict[str, Any]:
    """A Kinesis batch as Lambda delivers it, shaped like events/kinesis-events.json."""
    model = json.loads((EVENTS / "kinesis-events.json").read_text())["Records"][0]
    records = []
    for n, payload in enumerate(payloads):
        record = copy.deepcopy(model)
        sequence = f"{first_sequence + n:056d}"
        record["kinesis"].update(data=base64.b64encode(payload).decode(), sequenceNumber=sequence)
        record["eventID"] = f"shardId-000000000000:{sequence}"
        records.append(record)
    return {"Records": records}


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def publish(settings: Settings, dim: int, encoder_version: str, n_items: int = 12) -> None:
    """A release whose items have the sample events' ids ("1".."12"), and the items table."""
    rng = np.random.default_rng(0)
    ids = [str(n + 1) for n in range(n_items)]
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(dim)
    index.extend(ids, vectors, np.ones(n_items), [["Comedy"] if n % 2 else ["Horror"] for n in range(n_items)])
    rows = [Interaction(f"u{u}", ids[(u + k) % n_items], 4.0, k) for u in range(30) for k in range(3)]
    model = train(rows, index, TrainingConfig(ease_l2=10.0, neighbours=4, factors=2, als_iterations=2))
    files = {ITEM_VECTORS: index.to_npz(model_version=encoder_version, updated_at=100.0),
             COLLABORATIVE: model.to_npz(), "model.onnx": b"onnx bytes", "tokenizer.json": b"{}",
             "encoder.json": json.dumps({"model_version": encoder_version, "dim": dim}).encode()}
    S3Releases(settings).publish("v1", files, build_manifest("v1", files, created_at=1.0))
    ItemRepository(settings).put_many(
        ((Item(item_id, f"Movie {item_id}", categories=["Comedy"] if n % 2 else ["Horror"]), None)
         for n, item_id in enumerate(ids)), encoder_version, now=100.0)


def run_scenario(stack: Stack) -> None:
    """Every route of both API functions and every stream function's batch, through the
    paths their code has: before any release (no pointer, no counters yet) and after."""
    # Cold starts on an empty stack: no release pointer, no popularity counters.
    for function in ("ApiFunction", "AdminApiFunction", "EventsFunction", "PopularityFunction", "CatalogFunction"):
        stack.cold_start(function)
    assert stack.api("ApiFunction", "api-health.json")[0] == 200
    assert stack.api("AdminApiFunction", "api-get-user.json")[0] == 200
    assert stack.invoke("EventsFunction", sample("kinesis-events.json")) == {"batchItemFailures": []}
    assert stack.invoke("PopularityFunction", sample("popularity-kinesis.json"))["counted"] > 0

    encoder = wiring.encoder()
    publish(Settings.from_env(stack.environment("AdminApiFunction")), encoder.dim, encoder.version)
    for function in ("ApiFunction", "AdminApiFunction", "EventsFunction", "PopularityFunction", "CatalogFunction"):
        stack.cold_start(function)

    client = {
        "api-health.json": 200, "api-openapi.json": 200, "api-get-item.json": 200, "api-similar-items.json": 200,
        "api-post-events.json": 202, "api-recommendations.json": 200, "api-rank.json": 200,
        "api-trending.json": 200}
    exercised = set()
    for name, status in client.items():
        answer = stack.api("ApiFunction", name)
        assert answer[0] == status, (name, answer)
        exercised.add((sample(name)["httpMethod"], sample(name)["resource"]))
    assert exercised == stack.routes("ApiFunction"), "exercise every client route"

    _, listed = stack.api("ApiFunction", "api-recommendations.json")
    events = [{"event_id": "iam-1", "user_id": "42", "type": "click", "timestamp": 1717243400.0, "item_id": "3",
               "recommendation_id": listed["recommendation_id"]},
              {"event_id": "iam-2", "user_id": "42", "type": "purchase", "timestamp": 1717243401.0, "item_id": "3"}]
    batch = kinesis_batch([json.dumps(e).encode() for e in events] + [b"not an event"], first_sequence=10)
    failures = stack.invoke("EventsFunction", batch)
    assert failures == {"batchItemFailures": []}, "the invalid record goes to the dead-letter queue"
    assert stack.invoke("PopularityFunction", sample("popularity-kinesis.json"))["counted"] >= 0
    assert stack.invoke("CatalogFunction", sample("items-stream.json")) == {"batchItemFailures": []}

    admin = ["api-put-item.json", "api-delete-item.json", "api-get-user.json", "api-metrics.json",
             "api-delete-user.json"]
    exercised = set()
    for name in admin:
        answer = stack.api("AdminApiFunction", name)
        assert answer[0] == 200, (name, answer)
        exercised.add((sample(name)["httpMethod"], sample(name)["resource"]))
    assert exercised == stack.routes("AdminApiFunction"), "exercise every admin route"
    # GET /metrics without a variant scans the (small) metrics table instead of querying it.
    everything = sample("api-metrics.json")
    query = {"from": "2024-06-01", "to": "2024-06-30"}
    assert stack.api("AdminApiFunction", "api-metrics.json", queryStringParameters=query,
                     multiValueQueryStringParameters={k: [v] for k, v in query.items()},
                     path=everything["path"])[0] == 200


@pytest.fixture(scope="module")
def recorded() -> Iterator[tuple[Template, dict[str, list[Need]]]]:
    """Runs the scenario once; yields the template (with this stack's ARNs) and each function's needs."""
    recorder = Recorder()
    real_call = BaseClient._make_api_call

    def recording_call(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        try:
            response = real_call(self, operation_name, api_params)
        except ClientError as error:
            recorder.record(service, operation_name, api_params, error.response.get("Error", {}).get("Code"))
            raise
        recorder.record(service, operation_name, api_params, None)
        return response

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": REGION}.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "RECSYS_MODEL_DIR"):
            patch.delenv(name, raising=False)
        patch.setattr(BaseClient, "_make_api_call", recording_call)
        clear_caches()
        with mock_aws():
            template = Template(ROOT / "template.yaml", STACK, REGION)
            provision(template, {n: boto3.client(n, region_name=REGION)
                                 for n in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "s3")})
            run_scenario(Stack(template, patch, recorder))
        clear_caches()
    yield template, {function: [need for call in calls for need in required(*call)]
                     for function, calls in recorder.calls.items()}


FUNCTIONS = ["ApiFunction", "AdminApiFunction", "EventsFunction", "PopularityFunction", "CatalogFunction"]


def test_the_scenario_runs_every_function_of_the_template() -> None:
    template = Template(ROOT / "template.yaml", STACK, REGION)
    assert set(template.of_type("AWS::Serverless::Function")) == set(FUNCTIONS)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_call_the_code_makes_is_granted(recorded: tuple[Template, dict[str, list[Need]]],
                                              function: str) -> None:
    template, needs = recorded
    granted = grants(template, function)
    refused = sorted({f"{n.action} on {n.resource} {dict(n.context) or ''}".strip()
                      for n in needs.get(function, []) if not any(g.allows(n) for g in granted)})
    assert refused == [], f"{function}'s role lacks what its code calls"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_grant_is_used_by_the_code(recorded: tuple[Template, dict[str, list[Need]]], function: str) -> None:
    template, needs = recorded
    unused = [f"{g.sid}: {g.action} on {g.resource}" for g in grants(template, function)
              if not any(g.allows(n) for n in needs.get(function, []))]
    assert unused == [], f"{function}'s role grants what its code never calls"


def test_the_clients_function_cannot_delete_or_write_items_and_popularity_not_the_pointer(
        recorded: tuple[Template, dict[str, list[Need]]]) -> None:
    """The two holes this role split closes, said directly."""
    template, _ = recorded
    client = grants(template, "ApiFunction")
    assert not [g for g in client if "Delete" in g.action or g.action == "dynamodb:BatchWriteItem"]
    items_arn = template.get_att("ItemsTable", "Arn")
    assert not [g for g in client if g.resource == items_arn and g.action in ("dynamodb:PutItem",
                                                                            "dynamodb:UpdateItem")]
    bucket = template.ref("ArtifactsBucket")
    pointer = Need("s3:PutObject", f"arn:aws:s3:::{bucket}/releases/current.json")
    release_file = Need("s3:PutObject", f"arn:aws:s3:::{bucket}/releases/v2/manifest.json")
    for function in FUNCTIONS:
        assert not any(g.allows(n) for g in grants(template, function) for n in (pointer, release_file)), function


def test_an_over_broad_or_unused_grant_fails(recorded: tuple[Template, dict[str, list[Need]]]) -> None:
    """The comparison is not vacuous: SAM's S3CrudPolicy-like grant on the popularity
    function, or any extra action, is unused; a missing statement refuses a call."""
    template, needs = recorded
    bucket = template.get_att("ArtifactsBucket", "Arn")
    popularity = needs["PopularityFunction"]
    assert not any(Grant("X", "s3:DeleteObject", f"{bucket}/*", {}).allows(n) for n in popularity)
    assert any(Grant("X", "s3:PutObject", f"{bucket}/*", {}).allows(n) for n in popularity)
    assert not all(any(g.allows(n) for g in grants(template, "ApiFunction")) for n in needs["AdminApiFunction"])
