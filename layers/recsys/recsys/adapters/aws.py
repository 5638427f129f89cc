"""One boto3 client per service and endpoint for the life of the process, and the
pynamodb table settings: every adapter gets its clients here."""
from __future__ import annotations

from functools import cache

import boto3
import numpy as np
from pynamodb.exceptions import PutError, UpdateError

from recsys.settings import Settings


@cache
def aws_client(service: str, region: str, endpoint_url: str | None = None):
    """One client per service and endpoint for the life of the process."""
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url)


def table_meta(settings: Settings, table: str) -> type:
    """A pynamodb `Meta` for a table named by the settings."""
    return type("Meta", (), {"table_name": table, "region": settings.region, "host": settings.endpoint_url})


def conditional_check_failed(error: PutError | UpdateError) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


def vector_from(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.float32).copy()


def vector_bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()
