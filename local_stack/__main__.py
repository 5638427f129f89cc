"""`python -m local_stack`: the whole recommender on this machine, in the foreground.

Environment: RECSYS_API_KEY (the clients' key), RECSYS_ADMIN_KEY (item writes, users, metrics;
defaults: random keys, printed), RECSYS_PORT (default 3000).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from local_stack.client import ApiClient
from local_stack.demo import load_demo
from local_stack.stack import ROOT, LocalStack, configure_logging


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small")
    parser.add_argument("--catalog", type=Path, default=ROOT / "build" / "catalog" / "catalog.npz")
    parser.add_argument("--no-demo", action="store_true", help="start empty: no catalog, no users")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    configure_logging(args.verbose)
    api_key = os.environ.get("RECSYS_API_KEY") or secrets.token_urlsafe(24)
    admin_key = os.environ.get("RECSYS_ADMIN_KEY") or secrets.token_urlsafe(24)
    port = int(os.environ.get("RECSYS_PORT", "3000"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.perf_counter()
    try:
        serve(args, api_key, admin_key, port, started)
    except KeyboardInterrupt:
        pass
    print("local stack: stopped", flush=True)
    return 0


def serve(args: argparse.Namespace, api_key: str, admin_key: str, port: int, started: float) -> None:
    """Starts the stack, loads the demo, and serves until interrupted; leaving stops everything."""
    with LocalStack(api_key=api_key, admin_key=admin_key, port=port) as stack:
        elapsed = lambda: f"{time.perf_counter() - started:.1f} s"  # noqa: E731
        print(f"local stack: API on {stack.url} at {elapsed()} (functions' logs in {stack.log_dir})", flush=True)
        if not args.no_demo:
            demo = load_demo(stack, ApiClient(stack.url, api_key), args.data, args.catalog)
            print(f"local stack: demo catalog and users loaded at {elapsed()}: {demo}", flush=True)
        print(f"local stack: ready in {time.perf_counter() - started:.1f} s", flush=True)
        print(f"  API      {stack.url}\n  API key  {api_key}\n"
              f"  admin    {admin_key} (the admin key: PUT /items, /users/{{id}}, /metrics)\n"
              f"  try      curl -H 'x-api-key: {api_key}' {stack.url}/health\n  Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
