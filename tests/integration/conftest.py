"""Integration fixtures that need real artifacts."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENCODER_MODEL_DIR = REPO_ROOT / "layers" / "encoder" / "encoder_model"


@pytest.fixture(scope="session")
def encoder_model_dir() -> Path:
    """The int8 encoder artifact, built once (15-25 s here) if it is not there yet."""
    if not (ENCODER_MODEL_DIR / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "model_build", "encoder", "--out", str(ENCODER_MODEL_DIR)],
            cwd=REPO_ROOT,
            check=True,
        )
    return ENCODER_MODEL_DIR


CATALOG = REPO_ROOT / "build" / "catalog" / "catalog.npz"
DATA = REPO_ROOT / "data" / "ml-latest-small"
API_KEY = "integration-test-key"
ADMIN_KEY = "integration-admin-key"


@pytest.fixture(scope="session")
def stack(encoder_model_dir, tmp_path_factory):
    """The local stack from template.yaml on moto server, loaded with the demo catalog and
    users exactly as `make run` loads them (the catalog is embedded once if missing)."""
    from local_stack.client import ApiClient
    from local_stack.demo import load_demo
    from local_stack.stack import LocalStack, free_port

    with LocalStack(api_key=API_KEY, admin_key=ADMIN_KEY, port=free_port(),
                    log_dir=tmp_path_factory.mktemp("logs")) as running:
        running.health_watch = HealthWatch(ApiClient(running.url, API_KEY))
        running.health_watch.start()
        running.demo = load_demo(running, ApiClient(running.url, API_KEY), DATA, CATALOG)
        running.loaded_at = time.monotonic()
        running.health_watch.join(timeout=60)
        yield running


class HealthWatch(threading.Thread):
    """Polls GET /health while the demo loads; at the first 200, asks at once for a new
    user's list, plain and filtered (what a client that waits for ready does first)."""

    def __init__(self, client) -> None:
        super().__init__(name="health-watch", daemon=True)
        self.client = client
        self.seen: list[tuple[float, int, object]] = []   # (monotonic, status, body)
        self.first_lists: list[tuple[int, object]] = []

    def run(self) -> None:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            status, body = self.client.get("/health")
            self.seen.append((time.monotonic(), status, body))
            if status == 200:
                user = f"first-{uuid.uuid4().hex[:8]}"
                self.first_lists = [self.client.get(f"/users/{user}/recommendations", k=10),
                                    self.client.get(f"/users/{user}/recommendations", k=10, categories="Comedy",
                                                    exclude="1,2")]
                return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def api(stack):
    from local_stack.client import ApiClient

    return ApiClient(stack.url, API_KEY)


@pytest.fixture(scope="session")
def admin(stack):
    """A client with the admin key (item writes, users, metrics)."""
    from local_stack.client import ApiClient

    return ApiClient(stack.url, ADMIN_KEY)


@pytest.fixture(scope="session")
def movies():
    """item_id -> Item of the demo catalog."""
    from model_build.data import read_items

    return {item.item_id: item for item in read_items(DATA)}
