"""Guards on template.yaml, the single source of truth for the stack.

Reads the template as written (SAM resources, before the transform) with
cfn-lint's decoder, which understands the short-form tags (!Ref, !GetAtt, !Sub).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from cfnlint.decode import decode

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

STREAM_EVENT_TYPES = {"Kinesis", "DynamoDB", "SQS"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded, matches = decode(str(TEMPLATE_PATH))
    assert not matches, [str(m) for m in matches]
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def of_type(resources: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == resource_type}


def functions(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = of_type(resources, "AWS::Serverless::Function")
    assert found, "no AWS::Serverless::Function in the template"
    return found


def events_of(
    resources: dict[str, Any], types: set[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (fn_name, event_name, event.get("Properties", {}))
        for fn_name, fn in functions(resources).items()
        for event_name, event in fn["Properties"].get("Events", {}).items()
        if event["Type"] in types
    ]


def referenced_name(value: Any) -> str | None:
    """The logical id a !Ref or !GetAtt points to, or None for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return str(target[0] if isinstance(target, list) else target.split(".")[0])
    return None


def test_cfn_lint_reports_nothing() -> None:
    matches = lint(TEMPLATE_PATH.read_text(), regions=["us-east-1"])
    assert [str(m) for m in matches] == []


# Consumers that apply a batch whole or not at all (one conditional write per batch, a
# sequence watermark against retries): a partial-batch response would mean nothing.
ALL_OR_NOTHING_CONSUMERS = {"PopularityFunction"}


def test_every_stream_event_source_handles_failures(resources: dict[str, Any]) -> None:
    stream_events = events_of(resources, STREAM_EVENT_TYPES)
    assert stream_events, "expected Kinesis/DynamoDB event sources"
    for fn_name, event_name, props in stream_events:
        where = f"{fn_name}.{event_name}"
        if fn_name in ALL_OR_NOTHING_CONSUMERS:
            assert "FunctionResponseTypes" not in props, where
            assert props.get("ParallelizationFactor") == 1, f"{where}: one writer per shard"
        else:
            assert "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []), (
                where
            )
        if "Stream" in props:  # SQS sources have no bisect, record age or destination
            assert props.get("BisectBatchOnFunctionError") is True, where
            retries = props.get("MaximumRetryAttempts")
            assert isinstance(retries, int) and 0 <= retries <= 10, where
            age = props.get("MaximumRecordAgeInSeconds")
            assert isinstance(age, int) and 60 <= age <= 604800, where
            on_failure = props.get("DestinationConfig", {}).get("OnFailure", {})
            assert on_failure.get("Type") == "SQS", where
            queue = referenced_name(on_failure.get("Destination"))
            assert queue in resources, where
            assert resources[queue]["Type"] == "AWS::SQS::Queue", where


def test_every_table_is_on_demand_with_point_in_time_recovery(
    resources: dict[str, Any],
) -> None:
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert set(tables) >= {"ProfilesTable", "ItemsTable"}
    for name, table in tables.items():
        props = table["Properties"]
        assert props.get("BillingMode") == "PAY_PER_REQUEST", name
        pitr = props.get("PointInTimeRecoverySpecification", {})
        assert pitr.get("PointInTimeRecoveryEnabled") is True, name
        assert props.get("SSESpecification", {}).get("SSEEnabled") is True, name


def test_every_function_has_both_layers(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    global_layers = template.get("Globals", {}).get("Function", {}).get("Layers", [])
    assert [referenced_name(layer) for layer in global_layers] == [
        "DomainLayer",
        "EncoderLayer",
    ]
    for name, fn in functions(resources).items():
        # SAM prepends the global layers to a function's own list.
        layers = [*global_layers, *fn["Properties"].get("Layers", [])]
        refs = [referenced_name(layer) for layer in layers]
        assert {"DomainLayer", "EncoderLayer"} <= set(refs), name
    for layer in ("DomainLayer", "EncoderLayer"):
        assert resources[layer]["Type"] == "AWS::Serverless::LayerVersion"
        assert resources[layer]["Metadata"]["BuildMethod"] == "python3.12"


def test_every_function_has_a_log_group_with_retention(
    resources: dict[str, Any],
) -> None:
    log_groups = of_type(resources, "AWS::Logs::LogGroup").values()
    named = {}
    for group in log_groups:
        name = group["Properties"].get("LogGroupName", {})
        match = re.fullmatch(r"/aws/lambda/\$\{(\w+)\}", str(name.get("Fn::Sub", "")))
        if match:
            named[match.group(1)] = group["Properties"]
    for fn_name in functions(resources):
        assert fn_name in named, f"no /aws/lambda/${{{fn_name}}} log group"
        assert named[fn_name].get("RetentionInDays") == {"Ref": "LogRetentionDays"}, (
            fn_name
        )


def test_every_api_event_requires_the_api_key(resources: dict[str, Any]) -> None:
    api_events = events_of(resources, {"Api"})
    assert api_events, "expected Api events"
    for fn_name, event_name, props in api_events:
        where = f"{fn_name}.{event_name}"
        api = referenced_name(props.get("RestApiId"))
        assert api in resources and resources[api]["Type"] == "AWS::Serverless::Api", (
            where
        )
        api_auth = resources[api]["Properties"].get("Auth", {})
        required = props.get("Auth", {}).get(
            "ApiKeyRequired", api_auth.get("ApiKeyRequired")
        )
        assert required is True, where
        assert api_auth.get("UsagePlan", {}).get("CreateUsagePlan") in {
            "PER_API",
            "SHARED",
        }, where


# The functions' roles (explicit statements, no wildcard, granted == what the code calls,
# recorded from runs on moto) are tests/unit/test_iam.py's.


def test_contract_others_depend_on(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Logical ids, routes and environment names used by the code and the local stack."""
    def routes_of(fn_name: str) -> set[tuple[str, str]]:
        return {
            (props["Method"].upper(), props["Path"])
            for name, _, props in events_of(resources, {"Api"})
            if name == fn_name
        }

    assert routes_of("ApiFunction") == {
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/items/{item_id}"),
        ("GET", "/items/{item_id}/similar"),
        ("POST", "/events"),
        ("GET", "/users/{user_id}/recommendations"),
        ("POST", "/users/{user_id}/rank"),
        ("GET", "/trending"),
    }
    admin = {
        (props["Method"].upper(), props["Path"])
        for _, _, props in events_of(resources, {"Api"})
        if referenced_name(props["RestApiId"]) == "RecsysAdminApi"
    }
    assert admin == {("PUT", "/items/{item_id}"), ("DELETE", "/items/{item_id}"), ("GET", "/users/{user_id}"),
                     ("DELETE", "/users/{user_id}"), ("GET", "/metrics")}
    # The admin routes have a function (and a role) of their own; each API reaches one function.
    assert routes_of("AdminApiFunction") == admin
    for fn_name in ("ApiFunction", "AdminApiFunction"):
        props = resources[fn_name]["Properties"]
        assert (props["CodeUri"], props["Handler"]) == ("functions/api/", "app.lambda_handler"), fn_name
    api_env = {"PROFILES_TABLE", "ITEMS_TABLE", "EVENTS_STREAM", "ARTIFACTS_BUCKET", "RAW_EVENTS_BUCKET",
               "IMPRESSIONS_TABLE", "METRICS_TABLE", "AB_VARIANTS", "IMPRESSION_RETENTION_DAYS"}
    expected_env = {
        "ApiFunction": api_env | {"USER_TOKEN_SECRET"},
        "AdminApiFunction": api_env,
        "EventsFunction": {"PROFILES_TABLE", "ITEMS_TABLE", "ARTIFACTS_BUCKET",
                           "RAW_EVENTS_BUCKET", "EVENTS_DLQ_URL", "IMPRESSIONS_TABLE", "METRICS_TABLE"},
        "CatalogFunction": {"ITEMS_TABLE"},
        "PopularityFunction": {"ARTIFACTS_BUCKET"},
    }
    for fn_name, names in expected_env.items():
        env = resources[fn_name]["Properties"]["Environment"]["Variables"]
        assert set(env) == names, fn_name
    global_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert global_env == {"POWERTOOLS_SERVICE_NAME": "recsys", "LOG_LEVEL": "INFO"}
    for queue in ("EventsDeadLetterQueue", "CatalogDeadLetterQueue"):
        assert resources[queue]["Type"] == "AWS::SQS::Queue"
    assert resources["EventsStream"]["Type"] == "AWS::Kinesis::Stream"
    items = resources["ItemsTable"]["Properties"]
    assert items["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert [i["IndexName"] for i in items["GlobalSecondaryIndexes"]] == ["by_update"]
    assert set(template["Outputs"]) >= {
        "ApiUrl",
        "ApiKeyId",
        "AdminApiUrl",
        "AdminApiKeyId",
        "ArtifactsBucketName",
        "ProfilesTableName",
        "ItemsTableName",
        "EventsStreamName",
        "EventsDeadLetterQueueUrl",
        "CatalogDeadLetterQueueUrl",
    }


def test_alarms_notify_only_when_a_topic_is_given(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    watched = {
        referenced_name(d["Value"])
        for a in alarms.values()
        for d in a["Properties"]["Dimensions"]
    }
    assert (
        set(functions(resources)) | {"EventsDeadLetterQueue", "CatalogDeadLetterQueue"}
        <= watched
    )
    for name, alarm in alarms.items():
        actions = alarm["Properties"].get("AlarmActions")
        assert actions == {
            "Fn::If": [
                "HasAlarmTopic",
                [{"Ref": "AlarmTopicArn"}],
                {"Ref": "AWS::NoValue"},
            ]
        }, name
    assert "HasAlarmTopic" in template["Conditions"]


def test_sam_transform_generates_the_api_key_output(template: dict[str, Any]) -> None:
    """ApiKeyId refers to a resource that only exists after the SAM transform."""
    import copy
    import os

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    packaged = copy.deepcopy(template)
    for resource in packaged["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in props:
                props[key] = "s3://bucket/key"  # what `sam package` writes
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    transformed = transform(packaged, {}, NoManagedPolicies())
    out = transformed["Resources"]
    keys = [template["Outputs"][name]["Value"]["Ref"] for name in ("ApiKeyId", "AdminApiKeyId")]
    assert keys[0] != keys[1] and all(out[key]["Type"] == "AWS::ApiGateway::ApiKey" for key in keys)
    plans = {api: next(r for r in out.values() if r["Type"] == "AWS::ApiGateway::UsagePlan"
                       and r["Properties"]["ApiStages"][0]["ApiId"] == {"Ref": api})
             for api in ("RecsysApi", "RecsysAdminApi")}
    assert plans["RecsysApi"] is not plans["RecsysAdminApi"], "each key reaches only its own API"
    for api in ("RecsysApi", "RecsysAdminApi"):
        for path, methods in out[api]["Properties"]["Body"]["paths"].items():
            for method, operation in methods.items():
                assert operation.get("security") == [{"api_key": []}], (api, path, method)


def test_an_erasure_tombstone_outlives_every_place_an_event_waits(resources: dict[str, Any]) -> None:
    """An event from before an erase can still arrive until its age limit on the stream (the
    mapping dead-letters it then) plus the dead-letter queue's retention (`ops redrive`)."""
    from recsys.privacy import TOMBSTONE_SECONDS
    mapping = resources["EventsFunction"]["Properties"]["Events"]["EventsStreamBatch"]["Properties"]
    queue = resources["EventsDeadLetterQueue"]["Properties"]
    waits = mapping["MaximumRecordAgeInSeconds"] + queue["MessageRetentionPeriod"]
    assert TOMBSTONE_SECONDS >= waits


def test_the_user_token_secret_is_a_hidden_parameter_off_by_default_and_the_api_functions_alone(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    parameter = template["Parameters"]["UserTokenSecret"]
    assert parameter["NoEcho"] is True and parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("a" * 32) and pattern.fullmatch("a" * 32 + "," + "b" * 40)
    assert not pattern.fullmatch("a" * 31) and not pattern.fullmatch("a" * 32 + ",short")
    holders = {name for name, resource in resources.items()
               if "USER_TOKEN_SECRET" in resource.get("Properties", {}).get("Environment", {}).get("Variables", {})}
    assert holders == {"ApiFunction"}
    assert resources["ApiFunction"]["Properties"]["Environment"]["Variables"]["USER_TOKEN_SECRET"] == \
        {"Ref": "UserTokenSecret"}
