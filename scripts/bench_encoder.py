"""Benchmark the int8 ONNX encoder against the torch fp32 model it was built from.

Prints one JSON line, then the same figures for people. Needs the built artifact
(`python -m model_build encoder`) and torch; run from anywhere:

    .venv/bin/python scripts/bench_encoder.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "layers" / "recsys"), str(REPO_ROOT / "layers" / "encoder"), str(REPO_ROOT)]

import numpy as np  # noqa: E402

from encoder_model import MODEL_DIR  # noqa: E402
from model_build import encoder as build  # noqa: E402
from recsys.encoder import Encoder  # noqa: E402

QUERY = "scary zombie movie"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="int8 artifact folder")
    parser.add_argument("--hf-dir", type=Path, default=None, help="Hugging Face folder (default: gt package)")
    parser.add_argument("--runs", type=int, default=300, help="timed single-query runs per engine")
    parser.add_argument("--catalog-size", type=int, default=2000, help="texts for the throughput figures")
    return parser.parse_args()


def latencies_ms(call: Callable[[], Any], runs: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 3),
    }


def torch_encoder(hf_dir: Path, max_length: int) -> Callable[[Sequence[str]], np.ndarray]:
    """fp32 reference: the HF model with the same pooling, fed by the same tokenizer."""
    module = build.load_pooled_model(hf_dir)
    tokenizer = build.load_tokenizer(hf_dir / "tokenizer.json", max_length)
    return lambda texts: build.torch_embed(module, build.tokenize(tokenizer, texts))


def in_batches(embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], size: int = 32) -> np.ndarray:
    return np.concatenate([embed(texts[i : i + size]) for i in range(0, len(texts), size)])


def top_k_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (itself excluded) that both agree on."""

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :k]

    pairs = zip(neighbours(reference), neighbours(candidate), strict=True)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in pairs]))


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    cosines = np.sum(reference * candidate, axis=1)
    return {
        "mean_cosine": round(float(cosines.mean()), 4),
        "min_cosine": round(float(cosines.min()), 4),
        "top10_overlap": round(top_k_overlap(reference, candidate), 3),
    }


def throughput(model_dir: Path, texts: Sequence[str], threads: int, batch_size: int) -> float:
    encoder = Encoder(model_dir, threads=threads)
    encoder.encode(texts[:64], batch_size=batch_size)
    start = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    return round(len(texts) / (time.perf_counter() - start), 1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    int8 = Encoder(args.model_dir, threads=1)
    load_ms = (time.perf_counter() - start) * 1000
    fp32 = torch_encoder(args.hf_dir or build.default_model_dir(), int8.max_length)

    torch_latency = latencies_ms(lambda: fp32([QUERY]), args.runs)
    int8_latency = latencies_ms(lambda: int8.encode([QUERY]), args.runs)

    sample = build.fidelity_sample(build.DEFAULT_TEXTS_CSV)
    reference = in_batches(fp32, sample)
    batched = int8.encode(sample, batch_size=32)
    single = int8.encode(sample, batch_size=1)

    catalog = build.catalog_texts(build.DEFAULT_TEXTS_CSV)[: args.catalog_size]
    return {
        "model_version": int8.version,
        "query": QUERY,
        "threads": 1,
        "encoder_load_ms": round(load_ms, 1),
        "torch_fp32": torch_latency,
        "ort_int8": int8_latency,
        "speedup_p50": round(torch_latency["p50_ms"] / int8_latency["p50_ms"], 2),
        "texts": len(sample),
        "int8_batch32_vs_torch": fidelity(reference, batched),
        "int8_batch1_vs_torch": fidelity(reference, single),
        "int8_batch32_vs_batch1_mean_cosine": round(float(np.sum(batched * single, axis=1).mean()), 4),
        "catalog_texts": len(catalog),
        "items_per_s": {
            "batch32_threads1": throughput(args.model_dir, catalog, threads=1, batch_size=32),
            "batch32_threads2": throughput(args.model_dir, catalog, threads=2, batch_size=32),
            "batch1_threads1": throughput(args.model_dir, catalog, threads=1, batch_size=1),
        },
    }


def report(figures: dict[str, Any]) -> str:
    t, o, rate = figures["torch_fp32"], figures["ort_int8"], figures["items_per_s"]
    b32, b1 = figures["int8_batch32_vs_torch"], figures["int8_batch1_vs_torch"]
    return "\n".join(
        [
            f"encoder {figures['model_version']} (load {figures['encoder_load_ms']} ms)",
            f"query {figures['query']!r}, 1 thread: torch fp32 p50 {t['p50_ms']} ms p99 {t['p99_ms']} ms | "
            f"ORT int8 p50 {o['p50_ms']} ms p99 {o['p99_ms']} ms | {figures['speedup_p50']}x faster",
            f"int8 vs torch fp32 on {figures['texts']} catalog texts, batch 32: mean cosine {b32['mean_cosine']}, "
            f"min {b32['min_cosine']}, top-10 overlap {b32['top10_overlap']}",
            f"  batch 1: mean cosine {b1['mean_cosine']}, min {b1['min_cosine']}, "
            f"top-10 overlap {b1['top10_overlap']}; "
            f"batch 32 vs batch 1 mean cosine {figures['int8_batch32_vs_batch1_mean_cosine']}",
            f"throughput on {figures['catalog_texts']} catalog texts: batch 32 {rate['batch32_threads1']} items/s "
            f"(1 thread), {rate['batch32_threads2']} items/s (2 threads); "
            f"batch 1 {rate['batch1_threads1']} items/s (1 thread)",
        ]
    )


def main() -> int:
    figures = measure(parse_args())
    print(json.dumps(figures))
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
