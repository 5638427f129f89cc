"""Where a command finds the stack's resource names: the environment the functions get
(PROFILES_TABLE, ITEMS_TABLE, ARTIFACTS_BUCKET, ...), a deployed CloudFormation stack's
outputs (--stack NAME), or the running local stack (--local: `make run` writes
build/local-stack.env on start)."""
from __future__ import annotations

import os
from pathlib import Path

import boto3

LOCAL_ENV = Path(__file__).resolve().parents[1] / "build" / "local-stack.env"
OUTPUTS = {"ProfilesTableName": "PROFILES_TABLE", "ItemsTableName": "ITEMS_TABLE",
           "EventsStreamName": "EVENTS_STREAM", "ArtifactsBucketName": "ARTIFACTS_BUCKET",
           "RawEventsBucketName": "RAW_EVENTS_BUCKET", "ImpressionsTableName": "IMPRESSIONS_TABLE",
           "EventsDeadLetterQueueUrl": "EVENTS_DLQ_URL"}


class StackNotFound(RuntimeError):
    pass


def environment(local: bool = False, stack: str | None = None) -> dict[str, str]:
    """os.environ, overlaid with the local stack's or a deployed stack's names (and, for the
    local stack, its endpoint, put into os.environ too so every client reaches it)."""
    env = dict(os.environ)
    if local:
        if not LOCAL_ENV.exists():
            raise StackNotFound(f"{LOCAL_ENV} not found: is `make run` up?")
        env.update(line.split("=", 1) for line in LOCAL_ENV.read_text().splitlines() if "=" in line)
        os.environ.update(env)
    if stack:
        described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
        env.update({OUTPUTS[o["OutputKey"]]: o["OutputValue"] for o in described.get("Outputs", [])
                    if o["OutputKey"] in OUTPUTS})
    return env
