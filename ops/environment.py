"""Where a command finds the stack's resource names: the environment the functions get
(PROFILES_TABLE, ITEMS_TABLE, ARTIFACTS_BUCKET, ...), a deployed CloudFormation stack's
outputs (--stack NAME), or the running local stack (--local: `make run` writes
build/local-stack.env on start)."""
from __future__ import annotations

import os
from pathlib import Path

import boto3

from recsys.settings import ENVIRONMENT

LOCAL_ENV = Path(__file__).resolve().parents[1] / "build" / "local-stack.env"
# The stack's outputs, by the setting each one carries (recsys.settings.ENVIRONMENT names its variable).
OUTPUTS = {output: ENVIRONMENT[setting] for output, setting in {
    "ProfilesTableName": "profiles_table", "ItemsTableName": "items_table", "EventsStreamName": "events_stream",
    "ArtifactsBucketName": "artifacts_bucket", "RawEventsBucketName": "raw_events_bucket",
    "ImpressionsTableName": "impressions_table", "MetricsTableName": "metrics_table",
    "EventsDeadLetterQueueUrl": "events_dead_letter_queue"}.items()}


class StackNotFound(RuntimeError):
    pass


def environment(local: bool = False, stack: str | None = None) -> dict[str, str]:
    """os.environ, overlaid with the local stack's or a deployed stack's names (and, for the
    local stack, its endpoint, put into os.environ too so every client reaches it)."""
    env = dict(os.environ)
    if local:
        if not LOCAL_ENV.exists():
            raise StackNotFound(f"{LOCAL_ENV} not found: is `make run` up?")
        env.update(line.split("=", 1) for line in LOCAL_ENV.read_text().splitlines() if "=" in line)  # type: ignore[misc]
        os.environ.update(env)
    if stack:
        described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
        env.update({OUTPUTS[o["OutputKey"]]: o["OutputValue"] for o in described.get("Outputs", [])
                    if o["OutputKey"] in OUTPUTS})
    return env
