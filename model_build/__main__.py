"""Command line entry point: one argparse subcommand per build stage."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model_build.paths import LAYERS

sys.path[:0] = [str(path) for path in LAYERS if str(path) not in sys.path]

from model_build import catalog, collaborative, encoder, evaluate, finetune, pipeline, publish  # noqa: E402  (stages import the layers' packages)

STAGES = (pipeline, finetune, encoder, catalog, collaborative, publish, evaluate)


def build_parser() -> argparse.ArgumentParser:
    """Each stage module contributes a subcommand through `register(subparsers)`."""
    parser = argparse.ArgumentParser(prog="python -m model_build", description=__doc__)
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        stage.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
