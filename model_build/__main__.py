"""Command line entry point: one argparse subcommand per build stage."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model_build import catalog, collaborative, encoder, evaluate, finetune, pipeline, publish, synthetic

STAGES = (pipeline, finetune, encoder, catalog, collaborative, publish, evaluate, synthetic)


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
