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
