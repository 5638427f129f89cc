"""Creates the template's tables, streams, queues and buckets in moto."""
from __future__ import annotations

import time

import boto3

from local_stack.template import Template


def clients(endpoint: str, region: str) -> dict[str, object]:
    return {name: boto3.client(name, endpoint_url=endpoint, region_name=region)
            for name in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "s3")}


def provision(template: Template, aws: dict[str, object]) -> None:
    for logical_id in template.of_type("AWS::DynamoDB::Table"):
        _table(template, logical_id, aws["dynamodb"])
    for logical_id in template.of_type("AWS::Kinesis::Stream"):
        _stream(template, logical_id, aws["kinesis"])
    for logical_id in template.of_type("AWS::SQS::Queue"):
        _queue(template, logical_id, aws["sqs"])
    for logical_id in template.of_type("AWS::S3::Bucket"):
        _bucket(template, logical_id, aws["s3"])


def _table(template: Template, logical_id: str, dynamodb) -> None:
    props = template.properties(logical_id)
    name = template.physical_name(logical_id)
    request = {"TableName": name, "KeySchema": props["KeySchema"],
               "AttributeDefinitions": props["AttributeDefinitions"],
               "BillingMode": props.get("BillingMode", "PROVISIONED")}
    if request["BillingMode"] == "PROVISIONED":
        request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    if props.get("GlobalSecondaryIndexes"):
        request["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if props.get("StreamSpecification"):
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    description = dynamodb.create_table(**request)["TableDescription"]
    template.attributes[(logical_id, "Arn")] = description["TableArn"]
    if "LatestStreamArn" in description:
        template.attributes[(logical_id, "StreamArn")] = description["LatestStreamArn"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "AttributeName": ttl["AttributeName"], "Enabled": True})


def _stream(template: Template, logical_id: str, kinesis) -> None:
    props = template.properties(logical_id)
    name = template.physical_name(logical_id)
    if props.get("StreamModeDetails", {}).get("StreamMode") == "ON_DEMAND":
        kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    else:
        kinesis.create_stream(StreamName=name, ShardCount=int(props.get("ShardCount", 1)))
    for _ in range(100):
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            template.attributes[(logical_id, "Arn")] = summary["StreamARN"]
            return
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} did not become active")


def _queue(template: Template, logical_id: str, sqs) -> None:
    props = template.properties(logical_id)
    attributes = {k: str(props[k]) for k in ("MessageRetentionPeriod", "VisibilityTimeout") if k in props}
    url = sqs.create_queue(QueueName=template.physical_name(logical_id), Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    template.attributes[(logical_id, "Arn")] = arn
    template.attributes[(logical_id, "QueueUrl")] = url


def _bucket(template: Template, logical_id: str, s3) -> None:
    name = template.physical_name(logical_id)
    s3.create_bucket(Bucket=name) if template.region == "us-east-1" else s3.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": template.region})
    props = template.properties(logical_id)
    if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    rules = [_lifecycle_rule(n, rule) for n, rule in enumerate(rules)]
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})


def _lifecycle_rule(n: int, rule: dict) -> dict:
    """CloudFormation's shape of an S3 lifecycle rule in the S3 API's (the two the template uses)."""
    converted = {"ID": rule.get("Id", f"rule{n}"), "Status": rule["Status"],
                 "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if len(converted) == 3:
        raise ValueError(f"lifecycle rule {converted['ID']}: only ExpirationInDays and "
                         "NoncurrentVersionExpiration run locally")
    return converted
