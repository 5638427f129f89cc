"""The runtime Encoder against the real int8 artifact."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys.encoder import ArtifactError, Encoder

TEXTS = [
    "scary zombie movie",
    "Toy Story (1995) Adventure|Animation|Children|Comedy|Fantasy",
    "Night of the Living Dead (1968) Horror|Sci-Fi|Thriller",
    "a",
    "",
    "A long, rambling description of a heist film set in 1970s Lyon, with a twist ending " * 4,
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001) Comedy|Romance",
    "space opera",
]


@pytest.fixture(scope="module")
def encoder(encoder_model_dir: Path) -> Encoder:
    return Encoder(encoder_model_dir)


@pytest.fixture
def model_copy(encoder_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "encoder_model"
    shutil.copytree(encoder_model_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def test_shape_dtype_and_unit_norm(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), encoder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_version_and_dim_come_from_manifest(encoder: Encoder, encoder_model_dir: Path) -> None:
    manifest = json.loads((encoder_model_dir / "manifest.json").read_text())
    assert encoder.version == manifest["model_version"]
    assert encoder.dim == manifest["dim"] == 384


def test_batch_size_one_matches_single_calls_in_input_order(encoder: Encoder) -> None:
    singles = np.concatenate([encoder.encode([text]) for text in TEXTS])
    one_by_one = encoder.encode(TEXTS, batch_size=1)
    assert ((one_by_one * singles).sum(axis=1) > 0.999).all()


def test_batched_rows_match_single_calls(encoder: Encoder) -> None:
    """Activations are quantized per row (and block), so a row does not move with its batch mates."""
    singles = np.concatenate([encoder.encode([text]) for text in TEXTS])
    batched = encoder.encode(TEXTS, batch_size=3)
    assert ((batched * singles).sum(axis=1) > 0.9999).all()


def test_manifest_records_the_gate_it_passed(encoder_model_dir: Path) -> None:
    manifest = json.loads((encoder_model_dir / "manifest.json").read_text())
    fidelity = manifest["fidelity"]
    assert fidelity["mean_cosine"] >= fidelity["threshold_mean_cosine"] >= 0.99
    assert fidelity["top10_overlap"] >= fidelity["threshold_top10_overlap"] >= 0.97
    assert set(manifest["quantization"]["fp32_matmuls"]) <= {e["node"] for e in manifest["quantization"]["sensitivity"]}


def test_same_input_gives_same_output(encoder: Encoder) -> None:
    np.testing.assert_array_equal(encoder.encode(TEXTS), encoder.encode(TEXTS))
    repeated = encoder.encode(["scary zombie movie"] * 4)
    assert (repeated @ encoder.encode(["scary zombie movie"])[0] > 0.9999).all()


def test_empty_input(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_text_longer_than_max_length_is_truncated(encoder: Encoder) -> None:
    vectors = encoder.encode(["zombie " * 2000])
    assert vectors.shape == (1, encoder.dim)
    assert np.isfinite(vectors).all()


def test_semantic_sanity(encoder: Encoder) -> None:
    query, horror, family = encoder.encode(
        ["zombie horror film", "Night of the Living Dead (1968) Horror", "Toy Story (1995) Animation|Children|Comedy"]
    )
    assert query @ horror > query @ family + 0.1


def test_threads_do_not_change_results(encoder: Encoder, encoder_model_dir: Path) -> None:
    two_threads = Encoder(encoder_model_dir, threads=2).encode(TEXTS)
    np.testing.assert_allclose(two_threads, encoder.encode(TEXTS), atol=1e-4)


def test_single_string_is_rejected(encoder: Encoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("scary zombie movie")


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_corrupted_file_raises_artifact_error(model_copy: Path, name: str) -> None:
    path = model_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    expected = json.loads((model_copy / "manifest.json").read_text())["files"][name]["sha256"]
    with pytest.raises(ArtifactError, match=name) as caught:
        Encoder(model_copy)
    assert expected in str(caught.value)


def test_dim_mismatch_raises_artifact_error(model_copy: Path) -> None:
    manifest_path = model_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dim"] = 512
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="384.*512"):
        Encoder(model_copy)


def test_missing_manifest_raises_artifact_error(model_copy: Path) -> None:
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json"):
        Encoder(model_copy)


def test_missing_model_raises_artifact_error(model_copy: Path) -> None:
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx"):
        Encoder(model_copy)
