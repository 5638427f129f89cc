"""The one place that reads the environment.

Each Lambda function gets its resource names from template.yaml; locally the stack
passes the same names plus AWS_ENDPOINT_URL (which botocore reads by itself).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Each resource setting and the environment variable that carries it: the template sets
# these on the functions, ops/environment.py maps the stack's outputs onto them, and
# `Settings.require` names them when one is missing.
ENVIRONMENT = {
    "profiles_table": "PROFILES_TABLE",
    "items_table": "ITEMS_TABLE",
    "events_stream": "EVENTS_STREAM",
    "artifacts_bucket": "ARTIFACTS_BUCKET",
    "raw_events_bucket": "RAW_EVENTS_BUCKET",
    "events_dead_letter_queue": "EVENTS_DLQ_URL",
    "impressions_table": "IMPRESSIONS_TABLE",
    "metrics_table": "METRICS_TABLE",
    "variants": "AB_VARIANTS",
    "user_token_secret": "USER_TOKEN_SECRET",
}


@dataclass(frozen=True)
class Settings:
    profiles_table: str = ""
    items_table: str = ""
    events_stream: str = ""
    artifacts_bucket: str = ""
    raw_events_bucket: str = ""
    events_dead_letter_queue: str = ""
    impressions_table: str = ""
    metrics_table: str = ""
    variants: str = ""  # JSON, see recsys.experiments
    # Empty: user tokens off. One or more secrets, comma-separated: recsys.tokens. Kept out of repr.
    user_token_secret: str = field(default="", repr=False)
    impression_retention_days: float = 90.0
    region: str = "us-east-1"
    endpoint_url: str | None = None
    model_dir: Path | None = None
    # Where functions download a release's files to memory-map them (RECSYS_RELEASE_DIR; Lambda's
    # /tmp by default: the template sizes its ephemeral storage); "memory" reads them into memory.
    release_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        model_dir = env.get("RECSYS_MODEL_DIR")
        return cls(
            **{name: env.get(variable, "") for name, variable in ENVIRONMENT.items()},
            impression_retention_days=float(env.get("IMPRESSION_RETENTION_DAYS") or 90),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            model_dir=Path(model_dir) if model_dir else None,
            release_dir=None if env.get("RECSYS_RELEASE_DIR") == "memory" else
            Path(env.get("RECSYS_RELEASE_DIR") or Path(tempfile.gettempdir()) / "recsys-releases"),
        )

    def require(self, *names: str) -> None:
        """Raises naming the environment variables of the settings that are empty."""
        missing = [ENVIRONMENT[n] for n in names if not getattr(self, n)]
        if missing:
            raise RuntimeError(f"missing configuration: set {', '.join(missing)}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
