"""A Hugging Face sentence encoder folder -> a pooled torch module -> ONNX fp32.

Mean pooling and L2 normalisation are baked into the graph, so the ONNX model maps
(input_ids, attention_mask) straight to the embedding the recommender uses. torch and
transformers are imported only when a function needs them.
"""
from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoder import Encoder, tokenize

OPSET = 17
OUTPUT_NAME = "embedding"
INPUT_NAMES = ("input_ids", "attention_mask")
DEFAULT_MAX_LENGTH = 256
MAX_EXPORT_ABS_DIFF = 1e-3
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ExportError(Exception):
    """The folder cannot be exported, or its ONNX export does not compute what torch does."""


def source_weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise ExportError(f"no weights ({' or '.join(WEIGHT_FILES)}) in {model_dir}")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def max_length_for(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length if declared, capped by the position table."""
    declared = read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", DEFAULT_MAX_LENGTH)
    positions = read_json(model_dir / "config.json").get("max_position_embeddings", declared)
    return int(min(declared, positions))


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


def check_export(module: Any, fp32: Encoder, tokenizer: Any, texts: Sequence[str]) -> float:
    """Max |torch - ONNX| over batches whose shapes differ from the export example (`fp32`
    runs the export as the runtime does, each batch whole)."""
    batches = [list(texts), list(texts[-1:])]
    diff = max(
        float(np.max(np.abs(torch_embed(module, tokenize(tokenizer, batch)) - fp32.encode(batch, len(batch)))))
        for batch in batches
    )
    if diff > MAX_EXPORT_ABS_DIFF:
        raise ExportError(f"ONNX fp32 export differs from torch by {diff:.2e} (> {MAX_EXPORT_ABS_DIFF})")
    return diff
