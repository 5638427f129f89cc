"""`python -m ops COMMAND`: operations on a running stack.

Resource names come from the environment the functions get (PROFILES_TABLE,
EVENTS_STREAM, RAW_EVENTS_BUCKET, EVENTS_DLQ_URL, ...), from a CloudFormation stack's
outputs with --stack NAME, or from the running local stack with --local (it writes
build/local-stack.env on start).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops import commands
from ops.environment import StackNotFound, environment
from recsys.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the stack `make run` started")
    where.add_argument("--stack", help="a deployed CloudFormation stack's name")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("redrive", help="put dead-lettered events back on the events stream")
    export = sub.add_parser("export-events", help="write every raw applied event to a CSV")
    export.add_argument("--out", type=Path, required=True)
    items = sub.add_parser("export-items", help="write every item of the live catalog as JSON lines")
    items.add_argument("--out", type=Path, required=True, help="e.g. <dataset dir>/items.jsonl")
    sub.add_parser("release", help="build a release from the live catalog and the applied events, and publish it")
    refold = sub.add_parser("refold-profiles", help="fold every profile's vectors again from its raw events in "
                                                    "the functions' encoder's space (after an encoder change)")
    refold.add_argument("--users", type=Path, help="a file of user ids, one per line (default: every profile)")
    erase = sub.add_parser("erase-user", help="delete a user's profile, raw events and impressions")
    erase.add_argument("user_id")
    batch = sub.add_parser("batch-recommendations", help="lists for every profiled user (or --users) as JSON lines, "
                                                         "ranked by the serving code")
    batch.add_argument("--out", required=True, help="output .jsonl path, or s3://bucket/key")
    batch.add_argument("--k", type=int, default=50, help="items per list (1-100)")
    batch.add_argument("--users", type=Path, help="a file of user ids, one per line (default: every profile)")
    token = sub.add_parser("user-token", help="mint an x-user-token for a user (needs USER_TOKEN_SECRET; "
                                              "README, User tokens)")
    token.add_argument("user_id")
    token.add_argument("--seconds", type=int, default=commands.USER_TOKEN_DEFAULT_SECONDS,
                       help=f"how long it lasts (default {commands.USER_TOKEN_DEFAULT_SECONDS}, "
                            f"at most {commands.USER_TOKEN_MAX_SECONDS})")
    args = parser.parse_args()
    try:
        settings = Settings.from_env(environment(args.local, args.stack))
    except StackNotFound as error:
        sys.exit(f"ops: {error}")
    if args.command == "redrive":
        result = commands.redrive(settings)
    elif args.command == "export-events":
        result = commands.export_events(settings, args.out)
    elif args.command == "export-items":
        result = commands.export_items(settings, args.out)
    elif args.command == "release":
        result = commands.release(settings)
    elif args.command == "refold-profiles":
        users = args.users.read_text(encoding="utf-8").split() if args.users else None
        result = commands.refold_profiles(settings, users)
    elif args.command == "batch-recommendations":
        if not 1 <= args.k <= 100:
            sys.exit("ops: --k must be between 1 and 100")
        result = commands.batch_recommendations(settings, args.out, args.k, args.users)
    elif args.command == "user-token":
        try:
            result = commands.user_token(settings, args.user_id, args.seconds)
        except (RuntimeError, ValueError) as error:
            sys.exit(f"ops: {error}")
    else:
        result = commands.erase_user(settings, args.user_id)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
