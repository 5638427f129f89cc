"""What lives in the artifacts bucket (S3): versioned releases with their pointer, and
each stream shard's popularity counters."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from recsys.adapters.aws import aws_client
from recsys.popularity import PopularityCounters
from recsys.ports import ConcurrentUpdate
from recsys.settings import Settings

RELEASES_PREFIX = "releases/"
RELEASE_POINTER_KEY = "releases/current.json"
POPULARITY_PREFIX = "popularity/"
SHARD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class S3Releases:
    """Versioned releases in the artifacts bucket: `releases/<version>/<file>`, each with its
    `manifest.json`, and `releases/current.json` naming the version to serve."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    def current(self) -> str | None:
        """The version the pointer names, or None before the first release."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=RELEASE_POINTER_KEY)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        try:
            return str(json.loads(body)["version"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"s3://{self.bucket}/{RELEASE_POINTER_KEY} is not {{\"version\": ...}}: {error}") from None

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads(self.read(version, "manifest.json"))

    def read(self, version: str, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/{name}")["Body"].read()

    def fetch(self, version: str, name: str, folder: Path) -> Path:
        """Downloaded (boto3's managed transfer: ranged parts in parallel) to a temporary name,
        then renamed, so a file under its own name is always whole."""
        target = folder / version / name
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
        os.close(handle)
        try:
            self.s3.download_file(self.bucket, f"{RELEASES_PREFIX}{version}/{name}", partial)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return target

    def publish(self, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        """Files, then the manifest, then the pointer: a reader never sees a partial release."""
        for name, data in files.items():
            self.s3.put_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/{name}", Body=data)
        self.s3.put_object(Bucket=self.bucket, Key=f"{RELEASES_PREFIX}{version}/manifest.json",
                           Body=json.dumps(manifest, indent=2).encode())
        self.point_to(version)

    def point_to(self, version: str) -> None:
        """Serve `version` (a rollback is pointing back to an earlier one)."""
        self.s3.put_object(Bucket=self.bucket, Key=RELEASE_POINTER_KEY, Body=json.dumps({"version": version}).encode())


class PopularityStore:
    """Each stream shard's popularity counters: one object per shard
    (`popularity/<shard id>.npz`), replaced whole once per batch. The put is conditional
    on the ETag the writer read (or on there being no object yet), so if two writers
    ever hold one shard, the second to write fails with ConcurrentUpdate instead of
    overwriting the first."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self.s3 = aws_client("s3", settings.region, settings.endpoint_url)

    @staticmethod
    def key(shard_id: str) -> str:
        if not SHARD_ID.fullmatch(shard_id):
            raise ValueError(f"not a shard id: {shard_id!r}")
        return f"{POPULARITY_PREFIX}{shard_id}.npz"

    def load(self, shard_id: str) -> tuple[PopularityCounters, str] | None:
        """The shard's counters and their ETag, or None before its first write."""
        try:
            return self.get(self.key(shard_id))
        except self.s3.exceptions.NoSuchKey:
            return None

    def save(self, shard_id: str, counters: PopularityCounters, etag: str | None) -> str:
        """Replace the counters read with `etag` (None: there were none); returns the new ETag."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(Bucket=self.bucket, Key=self.key(shard_id), Body=counters.to_npz(),
                                          **condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ConcurrentUpdate(f"popularity counters of {shard_id} changed since read") from error
            raise
        return response["ETag"]

    def etags(self) -> dict[str, str]:
        """Object key -> ETag of every shard's counters (one list request per 1,000 shards)."""
        found: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=POPULARITY_PREFIX):
            found.update((o["Key"], o["ETag"]) for o in page.get("Contents", []) if o["Key"].endswith(".npz"))
        return found

    def get(self, key: str) -> tuple[PopularityCounters, str]:
        response = self.s3.get_object(Bucket=self.bucket, Key=key)
        return PopularityCounters.from_npz(response["Body"].read()), response["ETag"]

