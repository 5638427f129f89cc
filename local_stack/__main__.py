"""`python -m local_stack`: the whole recommender on this machine, in the foreground.

Environment: RECSYS_API_KEY (the clients' key), RECSYS_ADMIN_KEY (item writes, users, metrics;
defaults: random keys, printed), RECSYS_PORT (default 3000), RECSYS_USER_TOKEN_SECRET (the
UserTokenSecret parameter: set, user tokens are on; `python -m ops --local user-token ID` mints one).
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from local_stack.client import ApiClient
from local_stack.demo import load_demo, put_items
from local_stack.stack import ROOT, STOP_SECONDS, LocalStack, configure_logging
from model_build import paths


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small")
    parser.add_argument("--encoder", choices=paths.ENCODERS, default=paths.ENCODERS[0],
                        help="the encoder every function loads (built by `model_build encoder --model NAME`); "
                             "the demo's catalog is embedded with it")
    parser.add_argument("--catalog", type=Path, help="the demo catalog's .npz (default: the encoder's, "
                                                     "build/catalog/catalog.npz for minilm)")
    parser.add_argument("--items", type=Path, help="a CSV of further items (item_id, title or text, "
                                                   "[description, categories, attributes...]) PUT through the API")
    parser.add_argument("--no-demo", action="store_true", help="start empty: no catalog, no users")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "build" / "logs",
                        help="the functions' and moto's logs (local-stack.env goes beside it)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    configure_logging(args.verbose)
    api_key = os.environ.get("RECSYS_API_KEY") or secrets.token_urlsafe(24)
    admin_key = os.environ.get("RECSYS_ADMIN_KEY") or secrets.token_urlsafe(24)
    port = int(os.environ.get("RECSYS_PORT", "3000"))
    started = time.perf_counter()
    secret = os.environ.get("RECSYS_USER_TOKEN_SECRET")
    model_dir = paths.encoder_model(args.encoder)
    if not (model_dir / "manifest.json").is_file():
        parser.error(f"no {args.encoder} encoder in {model_dir}: run `python -m model_build encoder --model "
                     f"{args.encoder}` (make run ENCODER={args.encoder} does)")
    args.catalog = args.catalog or paths.catalog_dir(args.encoder) / "catalog.npz"
    stack = LocalStack(api_key=api_key, admin_key=admin_key, port=port, log_dir=args.log_dir,
                       parameters={"UserTokenSecret": secret} if secret else None,
                       model_dir=None if model_dir == paths.ENCODER_MODEL else model_dir)
    stopping = threading.Event()
    stopping_since = [0.0]

    def interrupted(signum: int, frame: object) -> None:
        """Ctrl-C (or SIGTERM): leave whatever runs, once; the stack stops on the way out,
        and if that takes too long, everything it started is killed."""
        if stopping.is_set():
            return
        stopping.set()
        stopping_since[0] = time.perf_counter()
        threading.Thread(target=last_resort, args=(stack,), name="last-resort", daemon=True).start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        serve(stack, args, api_key, started)
    except KeyboardInterrupt:
        pass
    if not stopping_since[0]:
        print("local stack: stopped", flush=True)
        return 0
    print(f"local stack: stopped in {time.perf_counter() - stopping_since[0]:.1f} s", flush=True)
    # Everything the stack started is gone; the interpreter's teardown (threads that were
    # talking to moto, the modules) can take seconds on a busy machine, and nothing needs it.
    logging.shutdown()
    os._exit(0)


def last_resort(stack: LocalStack) -> None:
    time.sleep(STOP_SECONDS + 1)
    stack.kill()
    print("local stack: killed (stopping took too long)", flush=True)
    os._exit(130)


def serve(stack: LocalStack, args: argparse.Namespace, api_key: str, started: float) -> None:
    """Starts the stack, loads the demo, and serves until interrupted; leaving stops everything."""
    with stack:
        elapsed = lambda: f"{time.perf_counter() - started:.1f} s"  # noqa: E731
        print(f"local stack: API on {stack.url} at {elapsed()}, loading (functions' logs in {stack.log_dir})",
              flush=True)
        if args.no_demo:
            stack.ready()
        else:
            demo = load_demo(stack, ApiClient(stack.url, api_key), args.data, args.catalog)
            print(f"local stack: demo catalog and users loaded at {elapsed()}: {demo}", flush=True)
        if args.items:
            written = put_items(ApiClient(stack.url, stack.admin_key), args.items)
            print(f"local stack: {written} items from {args.items} written at {elapsed()}", flush=True)
        print(f"local stack: ready in {time.perf_counter() - started:.1f} s", flush=True)
        print(f"  API      {stack.url}\n  API key  {api_key}\n"
              f"  admin    {stack.admin_key} (the admin key: PUT /items, /users/{{id}}, /metrics)\n"
              f"  try      curl -H 'x-api-key: {api_key}' {stack.url}/health\n  Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
