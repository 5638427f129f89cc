"""Stage `finetune`: contrastive fine-tuning of the encoder on what users chose next.

Training pairs come from the training side of a validation carve of the interactions
(model_build/blend.py's, which follows split.py's protocol): the text of a user's last
few items (their titles, newest last) and the text of the item they chose next. The
loss pulls each history toward its next item and away from the other items of the
batch (in-batch negatives, temperature 0.05). Torch, on `cuda` when there is one.

The fine-tuned encoder is kept only if it beats the pre-trained one on the carve's
held-out items, scored the way the content half of the recommender uses item vectors:
a user is the recency-weighted sum of their history's item vectors, items are ranked
by cosine. Both figures go to <out>/finetune.json; the model (a Hugging Face folder
the `encoder` stage exports with --model-dir) is written only when kept.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_build import paths
from model_build.data import Interaction, positive_choices, read_interactions, read_items
from model_build.export import load_pooled_model
from model_build.progress import progress
from model_build.validation import carve, metrics
from recsys.encoder import load_tokenizer, tokenize
from recsys.scoring import DEFAULT_WEIGHTS

HISTORY_ITEMS = 3
MAX_LENGTH = 128
TEMPERATURE = 0.05
STEPS, BATCH, LR, SEED = 200, 32, 2e-5, 7
# Without a GPU, fine-tuning must fit `make eval`'s budget on two cores: the embeddings and the
# lower half of the layers stay frozen (backward through half the model: 6.1 s a step instead
# of 10.9 on this machine under load 3.9) and fewer steps run. A compute budget, not a figure
# of any dataset; the caller keeps the model only if validation improves.
CPU_STEPS = 60
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "sentence_bert_config.json", "modules.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune the encoder on next-item choices (kept if better)")
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory")
    parser.add_argument("--model-dir", type=Path, default=None, help="Hugging Face folder (default: the gt package)")
    parser.add_argument("--out", type=Path, default=paths.FINETUNED, help="output folder")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default {STEPS} on a GPU, {CPU_STEPS} on CPU)")
    parser.add_argument("--batch", type=int, default=BATCH, help="pairs per step (the in-batch negatives)")
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.set_defaults(run=lambda args: run(args.data, args.model_dir or paths.pretrained_model(), args.out,
                                             args.steps, args.batch, args.lr, args.seed))


def log(message: str) -> None:
    print(f"finetune: {message}", file=sys.stderr, flush=True)


def pairs(interactions: Sequence[Interaction], titles: dict[str, str], texts: dict[str, str]
          ) -> list[tuple[str, str]]:
    """(history text, next item text) for every position with a history, per user in time order."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in interactions:
        if row.item_id in texts:
            by_user[row.user_id].append(row)
    found = []
    for rows in by_user.values():
        rows.sort(key=lambda r: r.timestamp)
        for t in range(1, len(rows)):
            history = " | ".join(titles[r.item_id] for r in rows[max(0, t - HISTORY_ITEMS):t])
            found.append((history, texts[rows[t].item_id]))
    return found


def content_figures(vectors: np.ndarray, ids: list[str], interactions: Sequence[Interaction],
                    held_out: dict[str, set[str]], cold: set[str], k: int = 50) -> dict[str, float]:
    """Validation figures of ranking by cosine to the recency-weighted sum of the history's vectors."""
    rows = {item_id: n for n, item_id in enumerate(ids)}
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in interactions:
        if row.item_id in rows:
            by_user[row.user_id].append(row)
    lists = {}
    for user in held_out:
        history = sorted(by_user.get(user, []), key=lambda r: r.timestamp)
        if not history:
            continue
        picked = np.array([rows[r.item_id] for r in history])
        recency = DEFAULT_WEIGHTS  # the history weighting the recommender serves with
        weights = recency.recency_floor + 0.5 ** (np.arange(len(history))[::-1] / recency.recency_half_life)
        scores = vectors @ (weights @ vectors[picked])
        scores[picked] = -np.inf
        best = np.argpartition(-scores, min(k, len(ids)) - 1)[:k]
        lists[user] = [ids[r] for r in best[np.argsort(-scores[best])]]
    return metrics(lists, held_out, cold)


def embed(module: Any, tokenizer: Any, texts: Sequence[str], device: Any, batch: int = 64) -> np.ndarray:
    import torch

    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            encoded = tokenize(tokenizer, texts[start:start + batch])
            out.append(module(torch.from_numpy(encoded["input_ids"]).to(device),
                              torch.from_numpy(encoded["attention_mask"]).to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def train(module: Any, tokenizer: Any, examples: list[tuple[str, str]], steps: int, batch: int, lr: float,
          device: Any, seed: int) -> list[float]:
    """In-batch-negative contrastive training; returns the loss of each step."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    losses = []
    for step in progress(range(steps), "finetune: training", unit="step"):
        chosen = rng.sample(examples, min(batch, len(examples)))
        targets = list(dict.fromkeys(t for _, t in chosen))  # one column per distinct next item
        column = {t: n for n, t in enumerate(targets)}
        queries = tokenize(tokenizer, [q for q, _ in chosen])
        items = tokenize(tokenizer, targets)
        q = module(torch.from_numpy(queries["input_ids"]).to(device),
                   torch.from_numpy(queries["attention_mask"]).to(device))
        d = module(torch.from_numpy(items["input_ids"]).to(device),
                   torch.from_numpy(items["attention_mask"]).to(device))
        labels = torch.tensor([column[t] for _, t in chosen], device=device)
        loss = torch.nn.functional.cross_entropy(q @ d.T / TEMPERATURE, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 20 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}: loss {np.mean(losses[-20:]):.3f}")
    module.eval()
    return losses


def freeze_lower_half(module: Any) -> int:
    """Freezes the embeddings and the lower half of a BERT-family model's layers; returns how
    many layers it froze."""
    layers = module.model.encoder.layer
    for parameter in module.model.embeddings.parameters():
        parameter.requires_grad = False
    for layer in layers[:len(layers) // 2]:
        for parameter in layer.parameters():
            parameter.requires_grad = False
    return len(layers) // 2


def run(data: Path, model_dir: Path, out: Path, steps: int | None = None, batch: int = BATCH, lr: float = LR,
        seed: int = SEED, judge: bool = True) -> int:
    """Fine-tunes and writes the model to `out` when kept. `judge` False: the caller judges
    (`make eval` compares the whole blend on validation,
    model_build/evaluate.py): the content-only figures are not computed and the model is
    always written."""
    import torch

    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    items = read_items(data)
    ids, texts = [i.item_id for i in items], {i.item_id: i.text for i in items}
    titles = {i.item_id: i.title for i in items}
    validation = carve(list(read_interactions(data)))
    chosen = positive_choices(validation.train)  # what users chose next: never a hide, a dislike, a low rating
    tokenizer = load_tokenizer(model_dir / "tokenizer.json", MAX_LENGTH)
    module = load_pooled_model(model_dir).to(device)
    on_gpu = device.type == "cuda"
    steps = steps if steps is not None else STEPS if on_gpu else CPU_STEPS
    frozen = 0 if on_gpu else freeze_lower_half(module)
    item_texts = [texts[i] for i in ids]

    def figures() -> dict[str, float]:
        return content_figures(embed(module, tokenizer, item_texts, device), ids, chosen,
                               validation.held_out, validation.cold_items)

    before = figures() if judge else None
    if before is not None:
        log(f"pre-trained on validation: {before} ({time.perf_counter() - started:.0f} s)")
    examples = pairs(chosen, titles, texts)
    trained_at = time.perf_counter()
    losses = train(module, tokenizer, examples, steps, batch, lr, device, seed)
    training_seconds = time.perf_counter() - trained_at
    after = figures() if judge else None
    kept = before is None or after is None or after["ndcg@10"] > before["ndcg@10"]
    if judge:
        log(f"fine-tuned on validation: {after}; {'kept' if kept else 'not kept: the pre-trained encoder is better'}")
    out.mkdir(parents=True, exist_ok=True)
    if kept:
        module.model.save_pretrained(str(out))
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    report = {"kept": kept, "pretrained": before, "finetuned": after, "device": str(device), "steps": steps,
              "frozen_layers": frozen,
              "batch": batch, "lr": lr, "pairs": len(examples), "first_loss": losses[0] if losses else None,
              "last_loss": float(np.mean(losses[-20:])) if losses else None,
              "training_seconds": round(training_seconds, 1),
              "seconds": round(time.perf_counter() - started, 1), "base": str(model_dir)}
    (out / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out / 'finetune.json'}" + (f" and the model to {out}" if kept else ""))
    return 0
