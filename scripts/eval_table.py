#!/usr/bin/env python3
"""The README's offline table: the team's peer figures (issue #5, measured by the team with
shared/eval on ml-latest-small, split.py defaults) and this build's row, scored now by
shared/eval/score.py on the lists `make eval` wrote.

    scripts/eval_table.py SPLIT_DIR RECS.jsonl [--label "this build"]

The peers' rows are quoted, not recomputed: they are only comparable on the split they
were measured on (ml-latest-small, split.py defaults). Standard library only.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SCORE = Path(__file__).resolve().parents[2] / "shared" / "eval" / "score.py"
COLUMNS = ("ndcg@10", "recall@20", "hr@10", "coverage@10", "cold_recall@20")
PEERS = (  # name, ndcg@10, recall@20, hr@10, coverage@10, cold_recall@20
    ("popularity", 0.0899, 0.0685, 0.390, 0.010, 0),
    ("ItemKNN cosine", 0.1156, 0.1064, 0.538, 0.064, 0),
    ("EASE", 0.1327, 0.1302, 0.544, 0.058, 0),
    ("implicit ALS", 0.1334, 0.1263, 0.544, 0.056, 0),
    ("implicit BPR", 0.1047, 0.0988, 0.487, 0.061, 0),
    ("LightFM WARP", 0.1198, 0.1082, 0.490, 0.066, 0),
    ("LightFM WARP + item features (genres, tags)", 0.1017, 0.0968, 0.474, 0.057, 0.0160),
    ("MiniLM content only (mean of history vectors)", 0.0144, 0.0154, 0.125, 0.055, 0.0149),
    ("SASRec (rectools)", 0.0836, 0.0978, 0.402, 0.048, 0),
)
TARGETS = {"ndcg@10": 0.140, "cold_recall@20": 0.05}  # issue #11's on ml-latest-small (0.032 was issue #5's)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split", type=Path)
    parser.add_argument("recs", type=Path)
    parser.add_argument("--label", default="this build: fitted blend")
    parser.add_argument("--score", type=Path, default=SCORE, help="shared/eval/score.py")
    args = parser.parse_args()
    figures = json.loads(subprocess.run([sys.executable, str(args.score), str(args.split), str(args.recs)],
                                        check=True, capture_output=True, text=True).stdout)
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for name, *values in PEERS:
        print(f"| {name} (team's peer figure) | " + " | ".join(_number(v) for v in values) + " |")
    print(f"| **{args.label}** | " + " | ".join(f"**{_number(figures[c] or 0)}**" for c in COLUMNS) + " |")
    verdicts = [f"{name} {figures[name] or 0:.4f} {'>=' if (figures[name] or 0) >= target else '<'} {target}"
                for name, target in TARGETS.items()]
    print("\ntargets: " + "; ".join(verdicts))
    return 0


def _number(value: float) -> str:
    return "0" if value == 0 else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
