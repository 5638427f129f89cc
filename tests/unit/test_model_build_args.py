"""Pure logic of the `encoder` build stage; no model is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_build import encoder
from model_build.__main__ import build_parser


def test_encoder_subcommand_defaults() -> None:
    args = build_parser().parse_args(["encoder"])
    assert args.out == encoder.DEFAULT_OUT
    assert args.model_dir is None
    assert args.force is False
    assert args.run is encoder.run


def test_a_stage_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_fidelity_sample_is_fixed_and_evenly_spread(tmp_path: Path) -> None:
    csv_path = tmp_path / "movies.csv"
    rows = [f'{i},"Movie {i} (2000)",Drama|Comedy' for i in range(1000)]
    rows.append('1000,"No Genre (2001)",(no genres listed)')
    csv_path.write_text("movieId,title,genres\r\n" + "\r\n".join(rows) + "\r\n")
    sample = encoder.fidelity_sample(csv_path, size=10)
    assert sample == encoder.fidelity_sample(csv_path, size=10)
    assert sample[:2] == ["Movie 0 (2000) Drama|Comedy", "Movie 100 (2000) Drama|Comedy"]
    assert encoder.fidelity_sample(csv_path, size=5000)[-1] == "No Genre (2001)"


def test_max_length_prefers_sentence_config_and_is_capped(tmp_path: Path) -> None:
    assert encoder.max_length_for(tmp_path) == encoder.DEFAULT_MAX_LENGTH
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1024}))
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert encoder.max_length_for(tmp_path) == 512


def test_up_to_date_needs_same_weights_and_intact_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    manifest = {
        "source_weights": {"sha256": "abc"},
        "files": {"model.onnx": {"sha256": encoder.sha256_file(tmp_path / "model.onnx")}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert encoder.is_up_to_date(tmp_path, "abc")
    assert not encoder.is_up_to_date(tmp_path, "other")
    (tmp_path / "model.onnx").write_bytes(b"changed")
    assert not encoder.is_up_to_date(tmp_path, "abc")
    assert not encoder.is_up_to_date(tmp_path / "missing", "abc")
