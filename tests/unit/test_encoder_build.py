"""The whole `encoder` stage on a tiny random-weight BERT (the real tokenizer, 2 layers of 64
units, so every weight MatMul is one block of 64 or more): export, calibration, smoothing,
GPTQ, ranking, the gate and the artifact the runtime Encoder loads, in seconds."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_build import encoder, export, fidelity, quantize
from model_build.__main__ import build_parser
from recsys.encoder import Encoder, load_tokenizer, tokenize


@pytest.fixture(scope="module")
def tiny_model(tiny_bert: Callable[[int, int], Path]) -> Path:
    return tiny_bert(64, 128)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("catalog")
    words = ["space", "kitchen", "war", "love", "robot", "detective", "ocean", "winter", "city", "dragon"]
    rows = [f"{n},{words[n % 10].title()} story {n} ({1950 + n % 70}),{'Drama' if n % 3 else 'Comedy'},"
            for n in range(120)]
    (folder / "items.csv").write_text("item_id,title,genres,tags\n" + "\n".join(rows) + "\n")
    return folder


def build(tiny_model: Path, catalog: Path, out: Path, *options: str) -> int:
    args = build_parser().parse_args(
        ["encoder", "--model-dir", str(tiny_model), "--data", str(catalog), "--out", str(out), *options])
    return args.run(args)


def test_the_stage_writes_a_gated_smoothed_int8_model_the_runtime_loads(
        tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert build(tiny_model, catalog, out, "--min-overlap", "0.5") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    quantization = manifest["quantization"]
    assert quantization["rounding"] == "GPTQ" and quantization["block_size"] == quantize.BLOCK_SIZE
    assert len(quantization["fp32_matmuls"]) == encoder.DEFAULT_KEEP_FP32
    assert len(quantization["sensitivity"]) == 12  # Q, K, V, attention out, FFN in, FFN out in 2 layers
    assert manifest["fidelity"]["mean_cosine"] >= 0.99

    import onnx

    ops = [node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 12 - encoder.DEFAULT_KEEP_FP32
    assert ops.count("Mul") >= 8  # one smoothing Mul per distinct MatMul input, 4 per layer

    texts = encoder.catalog_texts(catalog)[:16]
    module = export.load_pooled_model(tiny_model)
    tokenizer = load_tokenizer(out / "tokenizer.json", 128)
    reference = export.torch_embed(module, tokenize(tokenizer, texts))
    vectors = Encoder(out).encode(texts)
    assert np.mean(fidelity.row_cosines(reference, vectors)) > 0.99


def test_a_failed_gate_writes_nothing(tiny_model: Path, catalog: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    assert build(tiny_model, catalog, out, "--min-cosine", "1.01") == 1
    assert "int8 fidelity gate failed" in capsys.readouterr().err
    assert not out.exists()
