"""Which encoder serves: the pre-trained one or one fine-tuned on the data's interactions,
judged by the whole blend on the validation carve (model_build/blend.py), not by the
content signal alone.

MiniLM is fine-tuned on the carve's training side (model_build/finetune.py: on CPU the
lower half frozen and fewer steps), exported and quantized by the encoder stage (its int8
gate against the fine-tuned fp32 model), the catalog embedded with it, and the blend's
weights ascended on the same carve with its vectors (the collaborative maps refitted in its
space, `blend.Validation`), from the pre-trained blend's by the fit's two ascents
(`blend.ascents`), the second ascent keeping to the pre-trained blend's ndcg@10 where the
first reached it. It is kept when its blend improves on the pre-trained one
(`blend.improves_on`: each held to its own cold floor, then neither ndcg@10 nor new items
lost and one gained, or ndcg@10 gained beyond one standard error). `make eval` (unless
FINETUNE=0) ranks with its vectors and weights when kept (`finetuned`); `make model
FINETUNE=1` puts it in the layer and refits (`adopt`).
"""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_build import blend, collaborative, encoder, finetune, paths
from model_build import catalog as catalog_stage
from model_build.collaborative_training import TrainingConfig
from model_build.data import Interaction, read_interactions
from recsys.collaborative import CollaborativeModel
from recsys.index import ItemIndex
from recsys.scoring import BlendWeights

ENCODER_FILES = ("model.onnx", "tokenizer.json", "manifest.json")


def finetuned(data: Path, interactions: Sequence[Interaction], weights: BlendWeights, than: dict[str, float],
              than_floor: float, work: Path, steps: int | None, lap: Callable[[str], None],
              config: TrainingConfig = TrainingConfig()) -> dict[str, Any]:
    """The fine-tuned encoder against the blend figures `than` (held to `than_floor`) of the
    pre-trained one under `weights` and the training settings `config`. The fine-tuned blend's
    weights are ascended from `weights` on its own carve by the fit's two ascents (the history
    recency and the training settings kept: each would retrain or rescore every user; the second
    ascent keeps to `than`'s ndcg@10), so each encoder is judged with weights fitted in its own
    vector space, and kept by `blend.improves_on`. Returns "kept", the
    training report, both validation figures, "weights" (the fine-tuned blend's, with context),
    "encoder" (its int8 folder) and "catalog" (its item vectors' .npz) in `work`."""
    hf_dir, encoder_dir, catalog_npz = work / "model", work / "int8", work / "catalog.npz"
    if finetune.run(data, paths.pretrained_model(), hf_dir, steps, judge=False):
        raise RuntimeError("fine-tuning failed (see above)")
    training = json.loads((hf_dir / "finetune.json").read_text())
    lap("fine-tuning")
    if encoder.run(model="minilm", model_dir=hf_dir, out=encoder_dir, data=data):
        lap("fine-tuned encoder: int8 export")
        return {"kept": False, "why": "the fine-tuned model failed the int8 gate (see the log)", "training": training}
    lap("fine-tuned encoder: int8 export")
    catalog_stage.run(data, encoder_dir, catalog_npz, cache=work / "vector_cache.npz")
    index, _ = ItemIndex.from_npz(catalog_npz.read_bytes())
    validation = blend.Validation(interactions, index, config)

    def log(message: str) -> None:
        print(f"fine-tuned encoder: {message}", file=sys.stderr, flush=True)

    refitted, figures, _ = blend.ascents(validation, weights, blend.without_recency(blend.SEARCH), log,
                                         at_least=than["ndcg@10"])
    floor, floor_from = validation.floor(refitted)
    kept = blend.improves_on(figures, floor, than, than_floor)
    lap("fine-tuned encoder: blend on validation")
    verdict = "kept" if kept else "not kept: the pre-trained encoder's blend is better"
    print(f"fine-tuned encoder on validation {figures} (floor {floor}, {floor_from}) vs pre-trained {than} "
          f"(floor {than_floor}): {verdict}", file=sys.stderr, flush=True)
    return {"kept": kept, "training": training, "validation": {"finetuned": figures, "pretrained": than},
            "cold_floor": {"finetuned": floor, "pretrained": than_floor},
            "weights": json.loads(blend.with_context(refitted).to_json()), "encoder": str(encoder_dir),
            "catalog": str(catalog_npz)}


def adopt(data: Path, steps: int | None, lap: Callable[[str], None]) -> int:
    """The build job's choice, after its encoder, catalog and collaborative stages: the
    published blend's weights scored on validation with the layer's encoder, then with the
    fine-tuned one; if that is kept, its int8 files replace the layer's, its item vectors the
    catalog's, and the collaborative stage runs again (maps and blend fitted in its space)."""
    interactions = list(read_interactions(data))
    index, _ = ItemIndex.from_npz(paths.CATALOG.read_bytes())
    _, meta = CollaborativeModel.from_npz(paths.COLLABORATIVE.read_bytes())
    weights = BlendWeights.from_json(str(meta["blend"]))
    config = TrainingConfig(**json.loads(str(meta["training"]))) if "training" in meta else TrainingConfig()
    validation = blend.Validation(interactions, index, config)
    figures, (floor, _) = validation.score(weights), validation.floor(weights)
    lap("pre-trained encoder: blend on validation")
    tuned = finetuned(data, interactions, weights, figures, floor, paths.FINETUNED, steps, lap, config)
    (paths.FINETUNED / "choice.json").write_text(json.dumps(tuned, indent=2) + "\n")
    if not tuned["kept"]:
        return 0
    for name in ENCODER_FILES:
        shutil.copyfile(Path(tuned["encoder"]) / name, paths.ENCODER_MODEL / name)
    shutil.copyfile(tuned["catalog"], paths.CATALOG)
    return collaborative.run(data, paths.COLLABORATIVE, paths.CATALOG, fit=True)
