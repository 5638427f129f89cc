"""Vectors of item texts already embedded, by the text's hash and the encoder's version, so
a rebuild (`make release`, a daily build, `make eval` on another split) embeds only new or
changed items. One .npz (recsys.artifacts, kind `vector_cache`); a cache written by another
encoder, or unreadable, is ignored, never trusted."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.artifacts import ArtifactFormatError, read_npz, write_npz

KIND, FORMAT = "vector_cache", 1


class VectorCache:
    def __init__(self, model_version: str, hashes: list[str], vectors: np.ndarray) -> None:
        self.model_version = model_version
        self.rows = {text_hash: row for row, text_hash in enumerate(hashes)}
        self.vectors = vectors

    @classmethod
    def load(cls, path: Path, model_version: str, dim: int) -> VectorCache:
        """The cache at `path` if it holds `model_version`'s vectors, else an empty one."""
        empty = cls(model_version, [], np.zeros((0, dim), dtype=np.float32))
        if not path.exists():
            return empty
        try:
            artifact = read_npz(path.read_bytes(), KIND, FORMAT, ("hashes", "vectors"))
        except (ArtifactFormatError, ValueError):  # unreadable: rebuilt, never trusted
            return empty
        vectors = artifact.arrays["vectors"]
        if artifact.meta.get("model_version") != model_version or vectors.ndim != 2 or vectors.shape[1] != dim:
            return empty
        return cls(model_version, [str(h) for h in artifact.arrays["hashes"]], vectors.astype(np.float32))

    def get(self, text_hash: str) -> np.ndarray | None:
        row = self.rows.get(text_hash)
        return None if row is None else self.vectors[row]


def save(path: Path, model_version: str, hashes: list[str], vectors: np.ndarray) -> None:
    """Replace the cache with these texts' vectors (the current catalog's)."""
    unique = dict(zip(hashes, range(len(hashes)), strict=True))
    rows = list(unique.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(write_npz(KIND, FORMAT, {"hashes": np.array(list(unique), dtype=str),
                                              "vectors": vectors[rows].astype(np.float32)},
                               {"model_version": model_version}))
