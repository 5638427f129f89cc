"""Stage `all`: the whole build job in order, each stage skipping work whose output is current.

    python -m model_build all --data DIR [--finetune] [--stack NAME | --local]

finetune (with --finetune; its encoder is used only if it beat the pre-trained one) ->
encoder (export, int8, fidelity gate) -> catalog (embed) -> collaborative (train, fit
the blend on validation) -> publish (with --stack or --local). Prints the seconds each
stage took.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model_build import paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("all", help="every stage in order (finetune, encoder, catalog, collaborative, "
                                               "publish)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=paths.DATA, help="dataset directory")
    parser.add_argument("--finetune", action="store_true", help="fine-tune the encoder first")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="publish to this CloudFormation stack")
    where.add_argument("--local", action="store_true", help="publish to the stack `make run` started")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_build.__main__ import main

    seconds: dict[str, float] = {}

    def stage(name: str, *argv: str) -> None:
        started = time.perf_counter()
        code = main([name, *argv])
        seconds[name] = round(time.perf_counter() - started, 1)
        if code:
            raise SystemExit(f"model_build all: stage {name} failed ({code})")

    data = str(args.data)
    model_dir: list[str] = []
    if args.finetune:
        stage("finetune", "--data", data, "--out", str(paths.FINETUNED), "--steps", str(args.steps))
        if json.loads((paths.FINETUNED / "finetune.json").read_text())["kept"]:
            model_dir = ["--model-dir", str(paths.FINETUNED)]
    stage("encoder", "--data", data, *model_dir)
    stage("catalog", "--data", data, "--model", str(paths.ENCODER_MODEL), "--out", str(paths.CATALOG))
    stage("collaborative", "--data", data, "--out", str(paths.COLLABORATIVE), "--fit",
          "--catalog", str(paths.CATALOG))
    if args.stack or args.local:
        stage("publish", "--data", data, *(["--stack", args.stack] if args.stack else ["--local"]))
    print(json.dumps({"seconds": seconds, "total": round(sum(seconds.values()), 1)}))
    print("model_build all: done" + ("" if args.stack or args.local else
                                     " (not published: give --stack NAME or --local)"), file=sys.stderr)
    return 0
