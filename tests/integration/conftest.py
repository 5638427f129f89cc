"""Integration fixtures that need real artifacts."""
from __future__ import annotations

import subprocess
import sys
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
        running.demo = load_demo(running, ApiClient(running.url, API_KEY), DATA, CATALOG)
        yield running


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
