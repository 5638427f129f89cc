"""A release: one versioned set of the artifacts the functions serve, checked as a whole.

The build job publishes each release under its own version (item vectors with ids,
the collaborative model with its blend weights, and the encoder it was built with:
model.onnx, tokenizer.json and the encoder's manifest), writes the release manifest
(sha256 and size of every file, dimensions, metrics, source versions), and only then
moves the pointer to it. Functions follow the pointer: a new release is served
without a redeploy, and one whose files do not match their manifest, or whose
dimensions do not fit the encoder the function runs, is refused with a clear error
while the previous release keeps serving.

The encoder itself ships in the encoder layer (cold start), so a release must be built
with the encoder the functions run: a different encoder would also put every stored
profile vector in a different space. Data releases (catalog, collaborative model,
blend) switch live; an encoder change goes out with the layer.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from recsys.artifacts import ArtifactFormatError
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.scoring import DEFAULT_WEIGHTS, BlendWeights

FORMAT = 1
ITEM_VECTORS = "item_vectors.npz"
COLLABORATIVE = "collaborative.npz"
ENCODER_FILES = ("model.onnx", "tokenizer.json", "encoder.json")
SERVED_FILES = (ITEM_VECTORS, COLLABORATIVE)
HASH_BLOCK = 1 << 22  # bytes of a file on disk hashed at a time
T = TypeVar("T")
B = TypeVar("B", bytes, Path)


class ReleaseError(ValueError):
    """A release that cannot be served; the message says which file or dimension and why."""


def file_entry(data: bytes | Path) -> dict[str, Any]:
    """sha256 and size of a file's bytes, or of a file on disk (read a block at a time)."""
    if isinstance(data, bytes):
        return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    digest = hashlib.sha256()
    with open(data, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": data.stat().st_size}


def build_manifest(version: str, files: dict[str, bytes], created_at: float,
                   metrics: dict[str, Any] | None = None, sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The release manifest, after checking that the files fit together."""
    missing = [name for name in SERVED_FILES + ENCODER_FILES if name not in files]
    if missing:
        raise ReleaseError(f"release {version}: missing {', '.join(missing)}")
    index, index_meta = _read(version, ITEM_VECTORS, ItemIndex.from_npz, files[ITEM_VECTORS])
    model, model_meta = _read(version, COLLABORATIVE, CollaborativeModel.from_npz, files[COLLABORATIVE])
    encoder = json.loads(files["encoder.json"])
    if index.dim != int(encoder["dim"]):
        raise ReleaseError(f"release {version}: item vectors are {index.dim}-d, the encoder makes {encoder['dim']}-d")
    if str(index_meta.get("model_version")) != str(encoder["model_version"]):
        raise ReleaseError(f"release {version}: item vectors were made by {index_meta.get('model_version')}, "
                           f"the encoder is {encoder['model_version']}")
    _check_maps(version, model, index)
    unknown = len(set(model.item_ids) - set(index.ids))
    return {
        "format": FORMAT, "version": version, "created_at": created_at,
        "model_version": str(encoder["model_version"]),
        "files": {name: file_entry(data) for name, data in sorted(files.items())},
        "dimensions": {"encoder": int(encoder["dim"]), "item_vectors": index.dim, "items": len(index),
                       "factors": model.dim, "collaborative_items": len(model.item_ids),
                       "collaborative_items_not_in_catalog": unknown},
        "blend": json.loads(str(model_meta["blend"])) if "blend" in model_meta else None,
        "metrics": metrics or {}, "sources": sources or {},
    }


def _read(version: str, name: str, reader: Callable[[bytes | Path], T], data: bytes | Path) -> T:
    """A served file read by its class; one of another format (an older build job's) is refused."""
    try:
        return reader(data)
    except ArtifactFormatError as error:
        raise ReleaseError(f"release {version}: {name}: {error}; publish a release with this build job") from None


def _check_maps(version: str, model: CollaborativeModel, index: ItemIndex) -> None:
    """The collaborative model's new-item maps read vectors of the release's dimension."""
    if model.vector_dim != index.dim:
        raise ReleaseError(f"release {version}: the collaborative model maps {model.vector_dim}-d item vectors, "
                           f"the item vectors are {index.dim}-d")


def verified(manifest: dict[str, Any], name: str, data: B) -> B:
    """The file's bytes (or the file), if they are the ones the manifest names."""
    expected = manifest.get("files", {}).get(name)
    if expected is None:
        raise ReleaseError(f"release {manifest.get('version')}: the manifest lists no {name}")
    actual = file_entry(data)
    if actual != expected:
        raise ReleaseError(f"release {manifest.get('version')}: {name} has sha256 {actual['sha256']} "
                           f"({actual['bytes']} bytes), the manifest says {expected['sha256']} "
                           f"({expected['bytes']} bytes)")
    return data


@dataclass(frozen=True)
class Release:
    version: str
    manifest: dict[str, Any]
    index: ItemIndex
    updated_at: float  # items written after this are read from the items table
    collaborative: CollaborativeModel | None  # None where it was not asked for
    weights: BlendWeights


def open_release(manifest: dict[str, Any], read: Any, encoder_version: str, encoder_dim: int,
                 collaborative: bool = True) -> Release:
    """Reads and checks a release's served files (`read(name)`: the bytes, or the path of a
    local copy, which is then read memory-mapped: recsys.artifacts) for a function
    running the encoder `encoder_version` of `encoder_dim` dimensions; without
    `collaborative` (the events function folds profiles from item vectors alone) the
    collaborative model is neither read nor checked."""
    version = str(manifest.get("version"))
    if manifest.get("format") != FORMAT:
        raise ReleaseError(f"release {version}: manifest format {manifest.get('format')}, this code reads {FORMAT}")
    if manifest.get("model_version") != encoder_version:
        raise ReleaseError(f"release {version} was built with encoder {manifest.get('model_version')}; this "
                           f"function runs {encoder_version}: deploy that encoder layer, or publish with this one")
    index, meta = _read(version, ITEM_VECTORS, ItemIndex.from_npz,
                        verified(manifest, ITEM_VECTORS, read(ITEM_VECTORS)))
    if index.dim != encoder_dim or manifest.get("dimensions", {}).get("item_vectors") != index.dim:
        raise ReleaseError(f"release {version}: item vectors are {index.dim}-d, the encoder makes {encoder_dim}-d")
    blend = manifest.get("blend")
    weights = BlendWeights.from_json(json.dumps(blend)) if blend else DEFAULT_WEIGHTS
    updated_at = float(meta.get("updated_at", 0.0))
    if not collaborative:
        return Release(version, manifest, index, updated_at, None, weights)
    model, _ = _read(version, COLLABORATIVE, CollaborativeModel.from_npz,
                     verified(manifest, COLLABORATIVE, read(COLLABORATIVE)))
    if manifest.get("dimensions", {}).get("factors") != model.dim:
        raise ReleaseError(f"release {version}: collaborative model has {model.dim} factors, "
                           f"the manifest says {manifest.get('dimensions', {}).get('factors')}")
    _check_maps(version, model, index)
    return Release(version, manifest, index, updated_at, model, weights)
