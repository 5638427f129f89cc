"""Pure logic of the `encoder` build stage and its steps (export, quantize, fidelity); no model is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_build import encoder, export, fidelity, paths, quantize
from model_build.__main__ import build_parser


def test_encoder_subcommand_defaults() -> None:
    args = build_parser().parse_args(["encoder"])
    assert (args.model, args.out, args.model_dir) == ("minilm", None, None)
    assert paths.encoder_model(args.model) == paths.ENCODER_MODEL, "the default encoder builds into the layer"
    assert paths.encoder_model("use-multilingual") != paths.ENCODER_MODEL
    assert args.force is False
    assert (args.min_cosine, args.min_overlap) == (0.99, 0.97)
    assert (args.keep_fp32, args.data, args.base_model) == (encoder.DEFAULT_KEEP_FP32, paths.DATA, None)


def test_a_stage_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_held_out_texts_never_calibrate() -> None:
    texts = [f"Movie {i}" for i in range(35)]
    calibration, held_out = encoder.split_texts(texts)
    assert calibration == ["Movie 0", "Movie 10", "Movie 20", "Movie 30"]
    assert len(held_out) == 31
    assert not set(calibration) & set(held_out)
    many = [f"Item {i}" for i in range(10 * encoder.HELD_OUT_MAX)]
    calibration, held_out = encoder.split_texts(many)
    assert len(calibration) == encoder.CALIBRATION_MAX and len(held_out) == encoder.HELD_OUT_MAX
    assert calibration[:2] == ["Item 0", f"Item {10 * 10 * encoder.HELD_OUT_MAX // 10 // encoder.CALIBRATION_MAX}"]
    assert not set(calibration) & set(held_out)


def test_evenly_spaced_is_fixed_and_spread() -> None:
    assert fidelity.evenly_spaced(1000, 10) == list(range(0, 1000, 100))
    assert fidelity.evenly_spaced(5, 10) == [0, 1, 2, 3, 4]


def test_blockwise_int8_round_trips_within_half_a_step() -> None:
    weight = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    weight[:16, 0] = 0.0
    quantized, scales = quantize.blockwise_int8(weight)
    assert quantized.shape == (8, 64 // quantize.BLOCK_SIZE, quantize.BLOCK_SIZE)
    restored = (quantized.astype(np.float32) - 128) * scales.reshape(8, -1, 1)
    step = np.repeat(scales.reshape(8, -1), quantize.BLOCK_SIZE, axis=1)
    assert np.all(np.abs(restored.reshape(8, 64).T - weight) <= step.T / 2 + 1e-7)


def test_gptq_rounding_keeps_outputs_closer_than_round_to_nearest() -> None:
    rng = np.random.default_rng(2)
    k = 2 * quantize.BLOCK_SIZE
    # Correlated inputs with a few loud channels, as a transformer's hidden states have.
    inputs = rng.standard_normal((2000, 8)) @ rng.standard_normal((8, k)) + 0.1 * rng.standard_normal((2000, k))
    inputs[:, :3] *= 20
    weight = rng.standard_normal((k, 16)).astype(np.float32)

    def output_error(quantized: np.ndarray, scales: np.ndarray) -> float:
        restored = ((quantized.astype(np.float64) - 128) * scales.reshape(16, -1, 1)).reshape(16, k).T
        return float(np.linalg.norm(inputs @ (restored - weight)))

    nearest = output_error(*quantize.blockwise_int8(weight))
    gptq = output_error(*quantize.blockwise_int8(weight, inputs.T @ inputs))
    assert gptq < 0.8 * nearest


def _two_matmul_model(rng: np.random.Generator, width: int = 128):
    from onnx import TensorProto, helper, numpy_helper

    weights = [rng.standard_normal((width, width)).astype(np.float32) for _ in range(2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["h"], name="first"),
         helper.make_node("MatMul", ["h", "w1"], ["y"], name="second")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def _run(ort, model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_quantize_int8_keeps_the_chosen_matmuls_fp32() -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    model, weights = _two_matmul_model(rng)
    assert quantize.weight_matmuls(model) == ["first", "second"]
    quantized = quantize.quantize_int8(model, keep_fp32=["second"])
    assert [node.op_type for node in quantized.graph.node] == ["MatMulNBits", "MatMul"]
    assert [node.op_type for node in model.graph.node] == ["MatMul", "MatMul"]
    x = rng.standard_normal((4, 128)).astype(np.float32)
    expected = x @ weights[0] @ weights[1]
    assert np.abs(_run(ort, quantized, x) - expected).max() < 0.02 * np.abs(expected).max()


def test_smoothing_leaves_the_fp32_model_unchanged_and_shrinks_outlier_channels() -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    model, weights = _two_matmul_model(rng)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    x[:, 5] *= 50
    h = x @ weights[0]
    stats = {
        name: quantize.ActivationStats(np.abs(value).max(axis=0).astype(np.float64), value.T.astype(np.float64) @ value)
        for name, value in (("x", x), ("h", h))
    }
    smoothed, smoothed_stats = quantize.smooth(model, stats, alpha=0.5)
    assert [node.op_type for node in smoothed.graph.node] == ["Mul", "MatMul", "Mul", "MatMul"]
    expected = h @ weights[1]
    assert np.abs(_run(ort, smoothed, x) - expected).max() < 1e-4 * np.abs(expected).max()
    spread = smoothed_stats["x_smoothed"].absmax
    assert spread.max() / np.median(spread) < stats["x"].absmax.max() / np.median(stats["x"].absmax) / 3


def test_max_length_prefers_sentence_config_and_is_capped(tmp_path: Path) -> None:
    assert export.max_length_for(tmp_path) == export.DEFAULT_MAX_LENGTH
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1024}))
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert export.max_length_for(tmp_path) == 512


def test_up_to_date_needs_same_weights_and_intact_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    manifest = {
        "source_weights": {"sha256": "abc"},
        "build_recipe": {},
        "files": {"model.onnx": {"sha256": encoder.sha256_file(tmp_path / "model.onnx")}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert encoder.is_up_to_date(tmp_path, "abc", {})
    assert not encoder.is_up_to_date(tmp_path, "other", {})
    assert not encoder.is_up_to_date(tmp_path, "abc", {"keep_fp32": 3})
    (tmp_path / "model.onnx").write_bytes(b"changed")
    assert not encoder.is_up_to_date(tmp_path, "abc", {})
    assert not encoder.is_up_to_date(tmp_path / "missing", "abc", {})


def test_all_runs_each_stage_in_order_as_its_command_would(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from model_build import catalog, collaborative, encoder_choice, publish

    calls: list[tuple[str, tuple, dict]] = []

    def stage(name: str):
        def run(*args, **kwargs) -> int:
            calls.append((name, args, kwargs))
            return 0
        return run

    for module in (encoder, catalog, collaborative, publish):
        monkeypatch.setattr(module, "run", stage(module.__name__.rsplit(".", 1)[1]))
    monkeypatch.setattr(encoder_choice, "adopt", lambda data, steps, lap: calls.append(
        ("finetune", (data, steps), {})) or 0)
    from model_build import pipeline
    live = Path("build/live-data")
    monkeypatch.setattr(pipeline, "live_catalog", lambda data, local, stack: (live, 123.0))
    args = build_parser().parse_args(["all", "--data", "data/x", "--finetune", "--steps", "5", "--stack", "s"])
    assert args.run(args) == 0
    assert calls == [
        ("encoder", (), {"model": "minilm", "out": paths.ENCODER_MODEL, "data": live}),
        ("catalog", (live, paths.ENCODER_MODEL, paths.CATALOG), {"vectors_from": None}),
        ("collaborative", (live, paths.COLLABORATIVE, paths.CATALOG), {"fit": True}),
        ("finetune", (live, 5), {}),
        ("publish", (live,), {"local": False, "stack": "s", "snapshot_at": 123.0}),
    ], "publishing to a stack, every stage reads the dataset with the live catalog's items; the fine-tuned " \
       "encoder is judged against the fitted blend"
    assert set(json.loads(capsys.readouterr().out)["seconds"]) == {name for name, _, _ in calls}


def test_all_builds_another_encoder_into_the_layer_and_embeds_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from model_build import catalog, collaborative, encoder

    calls: list[tuple[str, tuple, dict]] = []
    for module in (encoder, catalog, collaborative):
        name = module.__name__.rsplit(".", 1)[1]
        monkeypatch.setattr(module, "run", lambda *a, _n=name, **k: calls.append((_n, a, k)) or 0)
    args = build_parser().parse_args(["all", "--data", "data/x", "--encoder", "use-multilingual",
                                      "--vectors", "gpu/catalog.npz"])
    assert args.run(args) == 0
    assert calls[0] == ("encoder", (), {"model": "use-multilingual", "out": paths.ENCODER_MODEL,
                                        "data": Path("data/x")})
    assert calls[1] == ("catalog", (Path("data/x"), paths.ENCODER_MODEL, paths.CATALOG),
                        {"vectors_from": Path("gpu/catalog.npz")})
    args = build_parser().parse_args(["all", "--encoder", "use-multilingual", "--finetune"])
    with pytest.raises(SystemExit, match="fine-tunes minilm"):
        args.run(args)
