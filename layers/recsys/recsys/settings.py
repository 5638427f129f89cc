"""The one place that reads the environment.

Each Lambda function gets its resource names from template.yaml; locally the stack
passes the same names plus AWS_ENDPOINT_URL (which botocore reads by itself).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


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
    impression_retention_days: float = 90.0
    region: str = "us-east-1"
    endpoint_url: str | None = None
    model_dir: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        model_dir = env.get("RECSYS_MODEL_DIR")
        return cls(
            profiles_table=env.get("PROFILES_TABLE", ""),
            items_table=env.get("ITEMS_TABLE", ""),
            events_stream=env.get("EVENTS_STREAM", ""),
            artifacts_bucket=env.get("ARTIFACTS_BUCKET", ""),
            raw_events_bucket=env.get("RAW_EVENTS_BUCKET", ""),
            events_dead_letter_queue=env.get("EVENTS_DLQ_URL", ""),
            impressions_table=env.get("IMPRESSIONS_TABLE", ""),
            metrics_table=env.get("METRICS_TABLE", ""),
            variants=env.get("AB_VARIANTS", ""),
            impression_retention_days=float(env.get("IMPRESSION_RETENTION_DAYS") or 90),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            model_dir=Path(model_dir) if model_dir else None,
        )

    def require(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            env_names = ", ".join(n.upper() for n in missing)
            raise RuntimeError(f"missing configuration: set {env_names}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
