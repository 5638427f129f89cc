"""Benchmark the int8 ONNX encoder against the torch fp32 model it was built from.

Single thread: p50 latency at batch 1 and items/s at batch 32 for both; fidelity as the
build's gate measures it (mean cosine on the held-out catalog texts, top-10 retrieval
overlap for 300 held-out queries), here against torch fp32. In the same run, the same
latency and throughput figures for the multilingual int8 encoder (issue #13) when it is
built (`python -m model_build encoder --model use-multilingual`; its fidelity is the
build's gate against the package's numpy reference). Prints one JSON line, then the same
figures for people; takes a few minutes (torch embeds ~8,800 texts). Needs the built
artifact (`python -m model_build encoder`) and torch; run from anywhere:

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

import numpy as np

from encoder_model import MODEL_DIR
from model_build import encoder as build
from model_build import export, fidelity, paths
from recsys.encoder import Encoder, load_tokenizer, tokenize

QUERY = "scary zombie movie"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="int8 artifact folder")
    parser.add_argument("--multilingual-dir", type=Path, default=paths.encoder_model("use-multilingual"),
                        help="the multilingual int8 artifact (measured beside the default when built)")
    parser.add_argument("--hf-dir", type=Path, default=None, help="Hugging Face folder (default: gt package)")
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset with the catalog texts")
    parser.add_argument("--runs", type=int, default=300, help="timed single-query runs per engine")
    parser.add_argument("--catalog-size", type=int, default=1000, help="texts for the throughput figures")
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


class TorchEncoder:
    """fp32 reference: the HF model with the same pooling, fed by the same tokenizer, batched
    as the runtime Encoder batches."""

    def __init__(self, hf_dir: Path, max_length: int) -> None:
        self.module = export.load_pooled_model(hf_dir)
        self.tokenizer = load_tokenizer(hf_dir / "tokenizer.json", max_length)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result = np.empty((len(texts), self.module.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            result[rows] = export.torch_embed(self.module, tokenize(self.tokenizer, [texts[i] for i in rows]))
        return result


def items_per_s(embed: Callable[[Sequence[str]], Any], texts: Sequence[str]) -> float:
    embed(texts[:64])
    start = time.perf_counter()
    embed(texts)
    return round(len(texts) / (time.perf_counter() - start), 1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    int8 = Encoder(args.model_dir, threads=1)
    load_ms = (time.perf_counter() - start) * 1000
    fp32 = TorchEncoder(args.hf_dir or paths.pretrained_model(), int8.max_length)

    torch_latency = latencies_ms(lambda: fp32.encode([QUERY], 1), args.runs)
    int8_latency = latencies_ms(lambda: int8.encode([QUERY]), args.runs)

    texts = build.catalog_texts(args.data)
    catalog = texts[: args.catalog_size]
    two_threads = Encoder(args.model_dir, threads=2)
    rates = {
        "torch_fp32_threads1": items_per_s(lambda batch: fp32.encode(batch, 32), catalog),
        "int8_threads1": items_per_s(lambda batch: int8.encode(batch, batch_size=32), catalog),
        "int8_threads2": items_per_s(lambda batch: two_threads.encode(batch, batch_size=32), catalog),
    }
    _, held_out = build.split_texts(texts)
    figures = fidelity.check_fidelity(fp32, int8, held_out)
    others = {}
    if (args.multilingual_dir / "manifest.json").is_file():
        multilingual = Encoder(args.multilingual_dir, threads=1)
        multilingual_two = Encoder(args.multilingual_dir, threads=2)
        others["use-multilingual"] = {
            "model_version": multilingual.version, "dim": multilingual.dim,
            "ort_int8": latencies_ms(lambda: multilingual.encode([QUERY]), args.runs),
            "batch32_items_per_s": {
                "int8_threads1": items_per_s(lambda batch: multilingual.encode(batch, batch_size=32), catalog),
                "int8_threads2": items_per_s(lambda batch: multilingual_two.encode(batch, batch_size=32), catalog)},
        }
    return {
        "model_version": int8.version,
        "query": QUERY,
        "threads": 1,
        "encoder_load_ms": round(load_ms, 1),
        "torch_fp32": torch_latency,
        "ort_int8": int8_latency,
        "speedup_p50": round(torch_latency["p50_ms"] / int8_latency["p50_ms"], 2),
        "catalog_texts": len(catalog),
        "batch32_items_per_s": rates,
        "speedup_batch32": round(rates["int8_threads1"] / rates["torch_fp32_threads1"], 2),
        "int8_vs_torch_fp32": figures,
        "other_encoders": others,
    }


def report(figures: dict[str, Any]) -> str:
    t, o, rate = figures["torch_fp32"], figures["ort_int8"], figures["batch32_items_per_s"]
    f = figures["int8_vs_torch_fp32"]
    return "\n".join(
        [
            f"encoder {figures['model_version']} (load {figures['encoder_load_ms']} ms)",
            f"batch 1, query {figures['query']!r}, 1 thread: torch fp32 p50 {t['p50_ms']} ms p99 {t['p99_ms']} ms | "
            f"ORT int8 p50 {o['p50_ms']} ms p99 {o['p99_ms']} ms | {figures['speedup_p50']}x faster",
            f"batch 32, {figures['catalog_texts']} catalog texts: torch fp32 {rate['torch_fp32_threads1']} items/s, "
            f"ORT int8 {rate['int8_threads1']} items/s (1 thread, {figures['speedup_batch32']}x), "
            f"{rate['int8_threads2']} items/s (2 threads)",
            f"int8 vs torch fp32 on {f['held_out_texts']} held-out catalog texts: mean cosine {f['mean_cosine']}, "
            f"min {f['min_cosine']}; top-10 retrieval overlap {f['top10_overlap']} over {f['queries']} queries",
        ]
        + [f"{name} {o['model_version']} ({o['dim']}-d): batch 1 p50 {o['ort_int8']['p50_ms']} ms "
           f"p99 {o['ort_int8']['p99_ms']} ms | batch 32 {o['batch32_items_per_s']['int8_threads1']} items/s "
           f"(1 thread), {o['batch32_items_per_s']['int8_threads2']} items/s (2 threads)"
           for name, o in figures["other_encoders"].items()]
    )


def main() -> int:
    figures = measure(parse_args())
    print(json.dumps(figures))
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
