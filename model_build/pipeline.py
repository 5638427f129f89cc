"""Stage `all`: the whole build job in order, each stage skipping work whose output is current.

    python -m model_build all --data DIR [--encoder NAME] [--finetune] [--stack NAME | --local]

encoder (export, int8, fidelity gate) -> catalog (embed) -> collaborative (train, fit
the blend on validation) -> finetune (with --finetune: MiniLM fine-tuned on the data,
kept in the layer only if the whole blend is better on validation, then the collaborative
stage again: model_build/encoder_choice.py) -> publish (with --stack or --local). Prints the seconds each
stage took. Publishing to a stack, the live catalog is read first (`ops export-items`
into build/live-data/, beside links to the dataset's files): the release holds every item
the API added, and its snapshot time is the export's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from model_build import catalog, collaborative, encoder, encoder_choice, finetune, paths, publish


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("all", help="every stage in order (finetune, encoder, catalog, collaborative, "
                                               "publish)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory")
    parser.add_argument("--encoder", choices=paths.ENCODERS, default=paths.ENCODERS[0],
                        help="the encoder built into the layer's folder (what `sam build` ships) and "
                             "embedded with; the release records it")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="item vectors computed before (a catalog .npz): its items are not embedded again")
    parser.add_argument("--finetune", action="store_true", help="fine-tune the encoder first (minilm)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"fine-tuning steps (default {finetune.STEPS} on a GPU, {finetune.CPU_STEPS} on CPU)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="publish to this CloudFormation stack")
    where.add_argument("--local", action="store_true", help="publish to the stack `make run` started")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    seconds: dict[str, float] = {}

    def stage(name: str, run_stage: Callable[[], int]) -> None:
        started = time.perf_counter()
        code = run_stage()
        seconds[name] = round(time.perf_counter() - started, 1)
        if code:
            raise SystemExit(f"model_build all: stage {name} failed ({code})")

    if args.finetune and args.encoder != paths.ENCODERS[0]:
        raise SystemExit(f"model_build all: --finetune fine-tunes {paths.ENCODERS[0]}, not {args.encoder}")
    data, snapshot_at = args.data, None
    if args.stack or args.local:
        data, snapshot_at = live_catalog(args.data, args.local, args.stack)
    stage("encoder", lambda: encoder.run(model=args.encoder, out=paths.ENCODER_MODEL, data=data))
    stage("catalog", lambda: catalog.run(data, paths.ENCODER_MODEL, paths.CATALOG, vectors_from=args.vectors))
    stage("collaborative", lambda: collaborative.run(data, paths.COLLABORATIVE, paths.CATALOG, fit=True))
    if args.finetune:
        stage("finetune", lambda: encoder_choice.adopt(data, args.steps, lambda step: print(
            f"model_build all: finetune: {step} done", file=sys.stderr, flush=True)))
    if args.stack or args.local:
        stage("publish", lambda: publish.run(data, local=args.local, stack=args.stack, snapshot_at=snapshot_at))
    print(json.dumps({"seconds": seconds, "total": round(sum(seconds.values()), 1)}))
    print("model_build all: done" + ("" if args.stack or args.local else
                                     " (not published: give --stack NAME or --local)"), file=sys.stderr)
    return 0


def live_catalog(data: Path, local: bool, stack: str | None) -> tuple[Path, float]:
    """A dataset directory of links to `data`'s files plus the stack's items (`items.jsonl`,
    which model_build.data reads over the CSV's), and when the export began."""
    from model_build.live_items import export
    from ops.environment import environment
    from recsys.settings import Settings

    work = paths.BUILD / "live-data"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for source in Path(data).iterdir():
        if source.is_file() and source.name != "items.jsonl":
            (work / source.name).symlink_to(source.resolve())
    exported = export(Settings.from_env(environment(local, stack)), work / "items.jsonl")
    print(f"model_build all: {exported['items']} live items exported to {work}", file=sys.stderr)
    return work, float(exported["exported_at"])
