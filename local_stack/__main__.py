"""`python -m local_stack`: the whole recommender on this machine, in the foreground.

Environment: RECSYS_API_KEY (default: a random key, printed), RECSYS_PORT (default 3000).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from local_stack.client import ApiClient
from local_stack.demo import load_catalog, load_users
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
    port = int(os.environ.get("RECSYS_PORT", "3000"))
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started = time.perf_counter()
    with LocalStack(api_key=api_key, port=port) as stack:
        print(f"local stack: API on {stack.url} (functions' logs in {stack.log_dir})", flush=True)
        if not args.no_demo:
            catalog = load_catalog(stack, args.data, args.catalog)
            print(f"local stack: catalog published: {catalog}", flush=True)
            users = load_users(stack, ApiClient(stack.url, api_key), args.data)
            print(f"local stack: demo users loaded: {users}", flush=True)
        print(f"local stack: ready in {time.perf_counter() - started:.1f} s", flush=True)
        print(f"  API      {stack.url}\n  API key  {api_key}\n"
              f"  try      curl -H 'x-api-key: {api_key}' {stack.url}/health\n  Ctrl-C stops it.", flush=True)
        stopping.wait()
        print("local stack: stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
