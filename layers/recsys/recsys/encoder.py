"""Runtime sentence encoder: the int8 ONNX artifact built by `python -m model_build encoder`.

Only onnxruntime, tokenizers, numpy and the standard library are imported here, so the
Lambda layer stays free of torch and transformers.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
REQUIRED_KEYS = ("model_version", "dim", "max_length", "files")
DEFAULT_OUTPUT = "embedding"


class ArtifactError(Exception):
    """The encoder artifact is missing, corrupt, or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found; build it with `python -m model_build encoder`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path} is not readable JSON: {error}") from error
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}")
    return manifest


def _verify_file(model_dir: Path, name: str, manifest: dict[str, Any]) -> Path:
    path = model_dir / name
    expected = manifest["files"].get(name, {}).get("sha256")
    if not expected:
        raise ArtifactError(f"{model_dir / MANIFEST} has no sha256 for {name}")
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(f"{path} checksum mismatch: manifest sha256 {expected}, file sha256 {actual}")
    return path


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The shipped tokenizer.json pads every input to 128; pad to the batch's longest instead."""
    tokenizer = Tokenizer.from_file(str(path))
    padding = tokenizer.padding or {}
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """A batch as the model reads it: input_ids and attention_mask, padded to its longest text."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        name = "the model bytes" if isinstance(model, bytes) else model
        raise ArtifactError(f"{name} cannot be loaded by onnxruntime: {error}") from error


class Encoder:
    """Texts -> L2-normalised float32 embeddings (n, dim) with the int8 ONNX model."""

    def __init__(self, model_dir: Path | str, threads: int = 1) -> None:
        model_dir = Path(model_dir)
        manifest = _read_manifest(model_dir)
        tokenizer = _verify_file(model_dir, TOKENIZER_FILE, manifest)
        model = _verify_file(model_dir, MODEL_FILE, manifest)
        self._open(model, tokenizer, str(manifest["model_version"]), int(manifest["max_length"]),
                   str(manifest.get("output", DEFAULT_OUTPUT)), threads, dim=int(manifest["dim"]))

    @classmethod
    def from_files(cls, model: Path | bytes, tokenizer: Path, max_length: int, threads: int = 1,
                   version: str = "unreleased", output: str = DEFAULT_OUTPUT) -> Encoder:
        """An encoder from a model (a file, or its bytes) and a tokenizer, without a manifest:
        the build job runs its fp32 and int8 candidates through it; dim is the model's."""
        encoder = cls.__new__(cls)
        encoder._open(model, tokenizer, version, max_length, output, threads, dim=None)
        return encoder

    def _open(self, model: Path | bytes, tokenizer: Path, version: str, max_length: int, output: str,
              threads: int, dim: int | None) -> None:
        self.version: str = version
        self.max_length: int = max_length
        self._output = output
        self._tokenizer = load_tokenizer(tokenizer, max_length)
        self._session = _session(model, threads)
        self._input_names = {node.name for node in self._session.get_inputs()}
        width = self._output_width()
        if dim is not None and width != dim:
            raise ArtifactError(f"{MODEL_FILE} makes {width}-d embeddings, manifest says dim {dim}")
        self.dim: int = width

    def _output_width(self) -> int:
        outputs = {node.name: node.shape for node in self._session.get_outputs()}
        if self._output not in outputs:
            raise ArtifactError(f"{MODEL_FILE} has no output {self._output!r} (has {sorted(outputs)})")
        width = outputs[self._output][-1]
        return width if isinstance(width, int) else int(self._run(["dimension probe"]).shape[1])

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        feeds = tokenize(self._tokenizer, texts)
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return self._session.run([self._output], feeds)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts in input order; batches are formed by length so padding stays small."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            result[rows] = self._run([texts[i] for i in rows])
        return result
