"""Block-wise int8 weights for an ONNX fp32 encoder, calibrated on catalog texts.

Calibration statistics (`activation_statistics`: per weight MatMul input, the channels'
max |x| and the Hessian X^T X) decide two things. SmoothQuant scales (`smooth`) move the
activations' outlier channels into the weights; GPTQ rounding (`blockwise_int8`) feeds
each rounding error forward so the layer's outputs stay close to fp32. `quantize_int8`
rewrites each weight MatMul as a com.microsoft MatMulNBits (8 bits, blocks of 64 along
the input dimension, int8 compute: activations quantized per row and block at run
time), except the ones kept fp32, which `rank_matmuls` chooses by how much fidelity
each one's quantization costs. onnx and onnxruntime are imported only when needed.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_build.fidelity import mean_distance
from model_build.progress import progress
from recsys.encoder import tokenize

BLOCK_SIZE = 64
SMOOTHING = 0.65  # SmoothQuant's migration strength alpha
STATISTICS_CHUNK = 128  # calibration texts per Hessian update
GPTQ_DAMPING = 0.01  # added to the Hessian's diagonal, as a share of its mean
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 activations and int8 dot products
QUANTIZATION = {
    "method": "block-wise int8 weights in com.microsoft MatMulNBits, int8 compute",
    "bits": 8,
    "block_size": BLOCK_SIZE,
    "symmetric": True,
    "accuracy_level": INT8_COMPUTE,
    "smoothing_alpha": SMOOTHING,
    "rounding": "GPTQ",
    "gptq_damping": GPTQ_DAMPING,
    "description": (
        f"each weight MatMul's input divided per channel by s = max|x|^{SMOOTHING} / max|w|^{1 - SMOOTHING} "
        "(a Mul node; max|x| over the calibration texts) and its weight rows multiplied by s (SmoothQuant); "
        f"weights int8 per output column and block of {BLOCK_SIZE} inputs (scale = block max / 127), rounded "
        "by GPTQ with the calibration inputs' X^T X; activations quantized to int8 per row and block at run "
        "time; embeddings, attention score MatMuls, LayerNorm, pooling and normalisation stay fp32; the "
        "fp32_matmuls also stay fp32"
    ),
    "fp32_selection": (
        "each weight MatMul alone left fp32, the rest int8; ranked by how much of the all-int8 model's "
        "mean (1 - cosine) to fp32 that removes on the calibration texts; the top ones stay fp32"
    ),
}


def weight_matmuls(model: Any) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D weight initializer."""
    weights = {init.name for init in model.graph.initializer if len(init.dims) == 2}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def matmuls_by_input(model: Any) -> dict[str, list[Any]]:
    """Weight MatMul nodes grouped by the activation they read (a layer's Q, K and V share one)."""
    names = set(weight_matmuls(model))
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.name in names:
            groups.setdefault(node.input[0], []).append(node)
    return groups


@dataclass(frozen=True)
class ActivationStats:
    """What calibration saw of one MatMul input: per-channel max |x| and the Hessian X^T X."""

    absmax: np.ndarray
    hessian: np.ndarray

    def scaled(self, scales: np.ndarray) -> ActivationStats:
        """The statistics of x / scales."""
        return ActivationStats(self.absmax / scales, self.hessian / np.outer(scales, scales))


def activation_statistics(model: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, ActivationStats]:
    """One fp32 pass over `texts`, one at a time (no padding rows), recording every weight MatMul input."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = list(matmuls_by_input(model))
    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    absmax: dict[str, np.ndarray] = {}
    hessian: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), STATISTICS_CHUNK):
        chunk: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for text in texts[start : start + STATISTICS_CHUNK]:
            for name, value in zip(names, session.run(names, tokenize(tokenizer, [text])), strict=True):
                chunk[name].append(value.reshape(-1, value.shape[-1]))
        for name, values in chunk.items():
            rows = np.concatenate(values).astype(np.float64)
            absmax[name] = np.maximum(absmax.get(name, 0), np.abs(rows).max(axis=0))
            hessian[name] = hessian.get(name, 0) + rows.T @ rows
    return {name: ActivationStats(absmax[name], hessian[name]) for name in names}


def smooth(
    fp32_model: Any, stats: dict[str, ActivationStats], alpha: float = SMOOTHING
) -> tuple[Any, dict[str, ActivationStats]]:
    """SmoothQuant: divide each MatMul input by s (a Mul node) and multiply the weights' rows by s, with
    s = max|x|^alpha / max|w|^(1 - alpha) per input channel. The product is unchanged in fp32; the
    activation's outlier channels, which would set the int8 scale of every block they fall in, shrink,
    and the weights (quantized with error feedback) take the difference. Returns the model and the
    statistics of its new inputs."""
    from onnx import helper, numpy_helper

    model = type(fp32_model)()
    model.CopyFrom(fp32_model)
    initializers = {init.name: init for init in model.graph.initializer}
    muls: dict[str, Any] = {}
    smoothed: dict[str, ActivationStats] = {}
    for name, nodes in matmuls_by_input(model).items():
        weights = [numpy_helper.to_array(initializers[node.input[1]]) for node in nodes]
        weight_max = np.abs(np.concatenate(weights, axis=1)).max(axis=1)
        scales = np.clip(
            np.maximum(stats[name].absmax, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha), 1e-4, 1e4
        )
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scales[:, None]).astype(np.float32), node.input[1])
            )
            node.input[0] = f"{name}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1 / scales).astype(np.float32), f"{name}_smoothing"))
        muls[f"{name}_smoothed"] = helper.make_node(
            "Mul", [name, f"{name}_smoothing"], [f"{name}_smoothed"], name=f"{name}_smooth"
        )
        smoothed[f"{name}_smoothed"] = stats[name].scaled(scales)
    nodes = []
    for node in model.graph.node:  # each Mul goes right before the first node that reads it
        nodes.extend(muls.pop(input_name) for input_name in node.input if input_name in muls)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, smoothed


def blockwise_int8(weight: np.ndarray, hessian: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) fp32 weight -> MatMulNBits' uint8 (N, K/B, B) with zero point 128 and (N * K/B) scales, B = BLOCK_SIZE.

    Symmetric int8 per output column and block of B inputs (scale = block max / 127). With the
    inputs' Hessian X^T X, rounding is GPTQ's: input rows are rounded in order and each row's
    rounding error, weighted by the inverse Hessian, is pushed onto the rows not yet rounded, so the
    layer's output on calibration inputs, not each weight, stays closest to fp32. Without it (or
    with the identity) it is plain round-to-nearest."""
    k, n = weight.shape
    work = weight.astype(np.float64)
    if hessian is None:
        feedback = np.eye(k)
    else:
        h = hessian.copy()
        dead = np.diag(h) == 0
        h[dead, dead] = 1
        work[dead] = 0
        h[np.diag_indices(k)] += GPTQ_DAMPING * np.mean(np.diag(h))
        feedback = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: inv(h) = feedback.T @ feedback
    levels = np.empty((k, n))
    scales = np.empty((k // BLOCK_SIZE, n))
    for i in range(k):
        if i % BLOCK_SIZE == 0:
            block_scale = np.abs(work[i : i + BLOCK_SIZE]).max(axis=0) / 127
            block_scale[block_scale == 0] = 1
            scales[i // BLOCK_SIZE] = block_scale
        levels[i] = np.clip(np.round(work[i] / block_scale), -127, 127)
        error = (work[i] - levels[i] * block_scale) / feedback[i, i]
        work[i + 1 :] -= np.outer(feedback[i, i + 1 :], error)
    quantized = levels.T.reshape(n, k // BLOCK_SIZE, BLOCK_SIZE) + 128
    return quantized.astype(np.uint8), scales.T.astype(np.float32).reshape(-1)


Int8Weights = dict[str, tuple[np.ndarray, np.ndarray]]


def int8_weights(model: Any, stats: dict[str, ActivationStats] | None = None) -> Int8Weights:
    """Every weight MatMul's block-wise int8 weights, by node name (GPTQ where `stats` has its input)."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    result = {}
    for name, nodes in progress(matmuls_by_input(model).items(), "encoder: int8 weights", unit="input"):
        hessian = stats[name].hessian if stats and name in stats else None
        for node in nodes:
            weight = numpy_helper.to_array(initializers[node.input[1]])
            if weight.shape[0] % BLOCK_SIZE == 0:
                result[node.name] = blockwise_int8(weight, hessian)
    return result


def quantize_int8(fp32_model: Any, keep_fp32: Collection[str], weights: Int8Weights | None = None) -> Any:
    """A copy of the model with every weight MatMul but `keep_fp32` replaced by an 8-bit MatMulNBits
    (`weights` from int8_weights; round-to-nearest when not given)."""
    from onnx import helper, numpy_helper

    weights = int8_weights(fp32_model) if weights is None else weights
    model = type(fp32_model)()
    model.CopyFrom(fp32_model)
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.name in keep_fp32 or node.name not in weights:
            nodes.append(node)
            continue
        quantized, scales = weights[node.name]
        name = node.input[1]
        if name in initializers:
            model.graph.initializer.remove(initializers.pop(name))
        model.graph.initializer.extend(
            [numpy_helper.from_array(quantized, f"{name}_int8"), numpy_helper.from_array(scales, f"{name}_scales")]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{name}_int8", f"{name}_scales"],
                list(node.output),
                name=f"{node.name}_int8",
                domain="com.microsoft",
                K=quantized.shape[1] * BLOCK_SIZE,
                N=quantized.shape[0],
                bits=8,
                block_size=BLOCK_SIZE,
                accuracy_level=INT8_COMPUTE,
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def rank_matmuls(fp32_model: Any, weights: Int8Weights, embed: Callable[[Any], np.ndarray]) -> list[dict[str, Any]]:
    """Weight MatMuls, most sensitive first: the share of the all-int8 model's mean (1 - cosine)
    to fp32 that leaving that one MatMul fp32 removes; `embed(model)` is a model's embeddings
    of the ranking texts."""
    reference = embed(fp32_model)

    def deficit(keep_fp32: Collection[str]) -> float:
        return mean_distance(reference, embed(quantize_int8(fp32_model, keep_fp32, weights)))

    base = deficit(())
    shares = {name: 1 - deficit([name]) / base for name in weight_matmuls(fp32_model)}
    ranked = sorted(shares, key=shares.__getitem__, reverse=True)
    return [{"node": name, "error_share": round(shares[name], 4)} for name in ranked]
