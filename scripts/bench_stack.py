"""Benchmark the recommender on the local stack: request latency, event freshness, start time.

1. Recommendation latency, warm, p50/p99 on the demo catalog:
   (a) ranking only (recsys.ranking.rank, without reasons, on the catalog's ItemIndex and the
       collaborative model; no AWS), with and without a precomputed context vector, plus the context
       encode time on its own;
   (b) the API function's real handler in this process (its DynamoDB profile read goes to
       moto server over HTTP);
   (c) end to end over HTTP through the local REST API (ApiClient).
2. Event -> changed recommendation: fresh users click one horror film (dwell 120 s); the
   time from the POST returning until their top 10 changes, polled every 20 ms.
3. Start time: LocalStack.__enter__ until the API is up, load_demo's wall time, and a real
   `make run` second start (until its "ready in" line), then Ctrl-C and the time to stop.

Prints lines for people, then one JSON line with every figure:

    .venv/bin/python scripts/bench_stack.py [--quick]

--quick skips the `make run` part. The machine's load average is printed with each part:
the stack's moto server, pollers and workers share the same cores as this process.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encoder_model import MODEL_DIR
from model_build.data import read_interactions, read_items
from recsys import ranking
from recsys.collaborative import Collaborative, CollaborativeModel
from recsys.encoder import Encoder
from recsys.index import ItemIndex
from recsys.profile import Profile, apply_events

REPO_ROOT = Path(__file__).resolve().parents[1]

DATA = REPO_ROOT / "data" / "ml-latest-small"
CATALOG = REPO_ROOT / "build" / "catalog" / "catalog.npz"
COLLABORATIVE = REPO_ROOT / "build" / "catalog" / "collaborative.npz"
API_FUNCTION = REPO_ROOT / "functions" / "api" / "app.py"
API_KEY = "bench-stack-key"
CONTEXT = "scary zombie movie"
K = 10
PROFILE_USERS = ("1", "414")   # a typical demo user (232 ratings) and the heaviest (2,698)
POLL_SECONDS = 0.02
CHANGE_TIMEOUT_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 240.0
STOP_TIMEOUT_SECONDS = 20.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip timing a real `make run`")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per latency figure")
    parser.add_argument("--users", type=int, default=20, help="fresh users in the event -> change test")
    return parser.parse_args()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def say(line: str) -> None:
    print(line, flush=True)


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p90_ms": round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] * 1000, 3),
            "p99_ms": round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3), "over_100ms": sum(1 for x in ordered if x > 0.1),
            "n": len(ordered)}


def timed(call: Callable[[int], Any], runs: int, warmup: int = 20) -> dict[str, float]:
    """Latency of call(i) over `runs` calls after `warmup` untimed ones."""
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    return percentiles_ms(samples)


def fmt(figure: dict[str, float]) -> str:
    slow = f", {figure['over_100ms']} over 100 ms" if figure["over_100ms"] else ""
    return f"p50 {figure['p50_ms']:.2f} ms, p99 {figure['p99_ms']:.2f} ms (n={figure['n']}{slow})"


# ---------------------------------------------------------------- 1a: scoring only

def user_profile(index: ItemIndex, ratings: list, user_id: str) -> Profile:
    events = [r.as_event() for r in ratings if r.user_id == user_id]
    profile = Profile(user_id=user_id)
    apply_events(profile, events, lambda e: index.vector(e.item_id) if e.item_id else None)
    return profile


def bench_scoring(runs: int) -> dict[str, Any]:
    index, _ = ItemIndex.from_npz(CATALOG.read_bytes())
    model, _ = CollaborativeModel.from_npz(COLLABORATIVE.read_bytes())
    collaborative = Collaborative(model, index)
    ratings = list(read_interactions(DATA))
    encoder = Encoder(MODEL_DIR, threads=1)
    context = encoder.encode([CONTEXT])[0]
    figures: dict[str, Any] = {"items": len(index), "dim": index.dim, "context": CONTEXT,
                               "encode_context_1thread": timed(lambda i: encoder.encode([CONTEXT]), runs),
                               "users": {}}
    for user_id in PROFILE_USERS:
        profile = user_profile(index, ratings, user_id)
        now = time.time()                           # the demo's ratings are years old: long-term only
        in_session = profile.last_event_at + 60.0   # as if the last event were a minute ago
        figures["users"][user_id] = {
            "events": profile.event_count, "consumed": len(profile.consumed),
            **{name: timed(lambda i, c=vector, t=at, p=profile: ranking.rank(
                index, p, ranking.Request(K, t, c), collaborative=collaborative, reasons=False), runs)
               for name, vector, at in (("profile", None, now), ("profile_context", context, now),
                                        ("profile_session_context", context, in_session))},
        }
    figures["cold_user"] = timed(lambda i: ranking.rank(index, None, ranking.Request(K, time.time()),
                                                        collaborative=collaborative, reasons=False), runs)
    return figures


# ---------------------------------------------------------------- 1b: the handler in this process

def proxy_event(user_id: str, query: dict[str, str]) -> dict[str, Any]:
    """An API Gateway REST proxy event for GET /users/{user_id}/recommendations, as the stack builds it."""
    path = f"/users/{user_id}/recommendations"
    headers = {"Host": "127.0.0.1", "x-api-key": API_KEY, "Accept": "application/json"}
    return {
        "resource": "/users/{user_id}/recommendations", "path": path, "httpMethod": "GET",
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query, "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        "pathParameters": {"user_id": user_id}, "stageVariables": None,
        "requestContext": {
            "resourcePath": "/users/{user_id}/recommendations", "httpMethod": "GET", "path": f"/v1{path}",
            "stage": "v1", "requestId": str(uuid.uuid4()), "accountId": "123456789012", "apiId": "local",
            "protocol": "HTTP/1.1", "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "bench_stack", "apiKey": API_KEY}},
        "body": None, "isBase64Encoded": False,
    }


def bench_handler(stack, users: list[str], runs: int) -> dict[str, Any]:
    """Imports functions/api/app.py with the API function's environment and calls its handler."""
    saved = dict(os.environ)
    keep = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}
    os.environ.update({k: v for k, v in stack.environment_of("ApiFunction").items() if k not in keep})
    try:
        from local_stack.worker import Context

        start = time.perf_counter()
        spec = importlib.util.spec_from_file_location("bench_api_app", API_FUNCTION)
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        import_s = time.perf_counter() - start
        statuses: dict[int, int] = {}

        def call(user_id: str, query: dict[str, str]) -> None:
            context = Context(str(uuid.uuid4()), (time.time() + 30) * 1000)
            response = app.lambda_handler(proxy_event(user_id, query), context)
            statuses[response["statusCode"]] = statuses.get(response["statusCode"], 0) + 1

        start = time.perf_counter()
        call(users[0], {"k": str(K)})
        first_s = time.perf_counter() - start
        figures = {
            "import_ms": round(import_s * 1000, 1), "first_call_ms": round(first_s * 1000, 1),
            "profile": timed(lambda i: call(users[i % len(users)], {"k": str(K)}), runs),
            "profile_context": timed(lambda i: call(users[i % len(users)], {"k": str(K), "context": CONTEXT}),
                                     runs),
            "cold_user": timed(lambda i: call(f"nobody-{i}", {"k": str(K)}), runs),
        }
        # The pieces: the DynamoDB profile read alone (the same repository the handler uses), the
        # live catalog's refresh (a by_update Query, at most once a second per warm function), and
        # the handler with that refresh held off.
        recommender = app.recommender
        figures["profile_read_only"] = timed(lambda i: recommender.profiles.get(users[i % len(users)]), runs)
        figures["catalog_refresh"] = timed(lambda i: recommender.catalog.refresh(), 5, warmup=1)
        refresh_seconds = recommender.catalog.refresh_seconds
        recommender.catalog.refresh_seconds = math.inf
        try:
            figures["profile_no_refresh"] = timed(lambda i: call(users[i % len(users)], {"k": str(K)}), runs)
        finally:
            recommender.catalog.refresh_seconds = refresh_seconds
        figures["statuses"] = statuses
        return figures
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------- 1c: over HTTP

def bench_http(api, users: list[str], runs: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}

    def get(user_id: str, **query: Any) -> None:
        status, _ = api.get(f"/users/{user_id}/recommendations", **query)
        statuses[status] = statuses.get(status, 0) + 1

    return {
        "profile": timed(lambda i: get(users[i % len(users)], k=K), runs),
        "profile_context": timed(lambda i: get(users[i % len(users)], k=K, context=CONTEXT), runs),
        "cold_user": timed(lambda i: get(f"nobody-{i}", k=K), runs),
        "statuses": statuses,
    }


# ---------------------------------------------------------------- 2: event -> changed list

def horror_films(cold_top: set[str], n: int) -> list[str]:
    """The n most-rated horror films not already in the cold-start list."""
    index, _ = ItemIndex.from_npz(CATALOG.read_bytes())
    movies = {item.item_id: item for item in read_items(DATA)}
    horror = [i for i in index.ids if i in movies and "Horror" in movies[i].categories and i not in cold_top]
    horror.sort(key=lambda i: -float(index.counts[index.rows[i]]))
    return horror[:n]


def bench_freshness(api, n_users: int) -> dict[str, Any]:
    def top(user_id: str) -> list[str]:
        status, body = api.get(f"/users/{user_id}/recommendations", k=K)
        if status != 200:
            raise RuntimeError(f"GET recommendations for {user_id}: {status} {body}")
        return [entry["item_id"] for entry in body["items"]]

    cold_top = set(top(f"bench-probe-{uuid.uuid4().hex[:8]}"))
    films = horror_films(cold_top, n_users)
    seconds, posts, polls, timeouts = [], [], [], 0
    for film in films:
        user = f"bench-{uuid.uuid4().hex[:10]}"
        before = top(user)
        start = time.perf_counter()
        status, body = api.post("/events", {"events": [
            {"event_id": f"{user}-click", "user_id": user, "type": "click", "item_id": film, "dwell_seconds": 120}]})
        posted = time.perf_counter()
        if status != 202 or body.get("accepted") != 1:
            raise RuntimeError(f"POST /events: {status} {body}")
        posts.append(posted - start)
        count = 0
        while True:
            after = top(user)
            count += 1
            waited = time.perf_counter() - posted
            if after != before:
                seconds.append(waited)
                polls.append(count)
                break
            if waited > CHANGE_TIMEOUT_SECONDS:
                timeouts += 1
                break
            time.sleep(POLL_SECONDS)
    ordered = sorted(seconds)
    return {
        "users": len(films), "changed": len(seconds), "timeouts": timeouts,
        "p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "p90_s": round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)], 3) if ordered else None,
        "max_s": round(ordered[-1], 3) if ordered else None,
        "min_s": round(ordered[0], 3) if ordered else None,
        "polls_p50": statistics.median(polls) if polls else None,
        "post_events": percentiles_ms(posts),
    }


# ---------------------------------------------------------------- 3: make run

def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[1]), fields[19]) if fields[0] != "Z" else None


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, command line) of every live descendant of `root` (its children's
    children too, whatever their session): the processes this benchmark started."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            parents[int(entry.name)] = stat
    found: dict[int, tuple[str, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in found:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                found[pid] = (started, cmdline.strip())
                frontier.append(pid)
    return found


def still_running(seen: dict[int, tuple[str, str]], grace: float = 3.0) -> list[str]:
    """Those of `seen` (same pid and start time) still alive after `grace` seconds."""
    deadline = time.time() + grace
    while True:
        alive = {pid: cmd for pid, (started, cmd) in seen.items() if (_stat(pid) or (0, None))[1] == started}
        if not alive or time.time() > deadline:
            return [f"{pid} {cmd}" for pid, cmd in sorted(alive.items())]
        time.sleep(0.2)


def bench_make_run() -> dict[str, Any]:
    from local_stack.stack import free_port

    dry = subprocess.run(["make", "-n", "run"], cwd=REPO_ROOT, capture_output=True, text=True)
    steps = [line for line in dry.stdout.splitlines() if line.strip()]
    # Only the final `exec python -m local_stack` should run on a second start. When make thinks
    # an artifact is stale (a dependency's mtime changed), tell it the catalog is up to date.
    make_args = ["make", "run"]
    stale = steps[:-1]
    if stale:
        make_args = ["make", "-o", str(CATALOG.relative_to(REPO_ROOT)), "run"]
    port = free_port()
    env = {**os.environ, "RECSYS_PORT": str(port)}
    env.pop("RECSYS_API_KEY", None)
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    process = subprocess.Popen(make_args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line.rstrip()))
            if "ready in" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.perf_counter() + READY_TIMEOUT_SECONDS
    while not ready.is_set() and process.poll() is None and time.perf_counter() < deadline:
        ready.wait(0.2)
    ready_s = time.perf_counter() - started if ready.is_set() else None
    children = descendants(process.pid)
    reported = None
    for _, line in lines:
        found = re.search(r"ready in ([0-9.]+) s", line)
        if found:
            reported = float(found.group(1))
    api_line = next((line for _, line in lines if "API on" in line), None)
    api_s = next((t for t, line in lines if "API on" in line), None)
    demo_s = next((t for t, line in lines if "demo catalog and users loaded" in line), None)

    stop_start = time.perf_counter()
    exit_code, stopped_s, killed = None, None, False
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        exit_code = process.wait(timeout=STOP_TIMEOUT_SECONDS)
        stopped_s = round(time.perf_counter() - stop_start, 2)
    except subprocess.TimeoutExpired:
        killed = True
        os.killpg(process.pid, signal.SIGKILL)
        exit_code = process.wait()
    reader.join(timeout=5)
    left = still_running(children)
    return {
        "command": " ".join(make_args), "stale_steps_skipped": stale, "port": port,
        "ready_s_wall": round(ready_s, 2) if ready_s is not None else None, "ready_s_reported": reported,
        "api_up_s_wall": round(api_s, 2) if api_s is not None else None,
        "demo_loaded_s_wall": round(demo_s, 2) if demo_s is not None else None,
        "api_line": api_line, "exit_code": exit_code, "stop_s": stopped_s,
        "stopped_within_20s": stopped_s is not None and not killed,
        "printed_stopped": any("local stack: stopped" in line for _, line in lines),
        "processes_seen": len(children),
        "leftover_processes": left,
        "output_tail": [line for _, line in lines[-8:]] if not ready.is_set() or killed else [],
    }


# ---------------------------------------------------------------- main

def main() -> int:
    args = parse_args()
    from local_stack.client import ApiClient
    from local_stack.demo import load_demo
    from local_stack.stack import LocalStack, configure_logging, free_port

    configure_logging()
    began = time.perf_counter()
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": load(), "requests": args.requests, "k": K}
    say(f"bench_stack: {os.cpu_count()} CPUs, load average {figures['loadavg_start']}")

    say("1a. scoring only (no AWS), single thread ...")
    figures["scoring_only"] = a = bench_scoring(args.requests)
    a["loadavg"] = load()
    say(f"  catalog {a['items']} items x {a['dim']}; context encode ({CONTEXT!r}, 1 thread): "
        f"{fmt(a['encode_context_1thread'])}")
    for user_id, u in a["users"].items():
        say(f"  user {user_id} ({u['events']} ratings, {u['consumed']} consumed): profile {fmt(u['profile'])}; "
            f"+context vector {fmt(u['profile_context'])}; +session+context {fmt(u['profile_session_context'])}")
    say(f"  cold user (popularity only): {fmt(a['cold_user'])}   load {a['loadavg']}")

    with tempfile.TemporaryDirectory(prefix="bench_stack_") as logs:
        say("starting the local stack ...")
        start = time.perf_counter()
        with LocalStack(api_key=API_KEY, admin_key=API_KEY + "-admin", port=free_port(), log_dir=Path(logs)) as stack:
            api_up = time.perf_counter() - start
            api = ApiClient(stack.url, API_KEY)
            start = time.perf_counter()
            demo = load_demo(stack, api, DATA, CATALOG)
            demo_s = time.perf_counter() - start
            figures["start"] = {"stack_enter_to_api_up_s": round(api_up, 2), "load_demo_s": round(demo_s, 2),
                                "second_start_s": round(api_up + demo_s, 2), "demo": demo, "loadavg": load()}
            say(f"3a. LocalStack.__enter__ -> API up {api_up:.2f} s; load_demo {demo_s:.2f} s "
                f"({demo['items']} items, {demo['events']} events, {demo['users']} users, "
                f"{demo['dead_lettered']} dead-lettered); total {api_up + demo_s:.2f} s   load {load()}")

            users = [str(u) for u in range(1, 611)]
            random.Random(7).shuffle(users)
            say("1b. API handler in this process (profile read from moto server over HTTP) ...")
            figures["handler_in_process"] = b = bench_handler(stack, users, args.requests)
            b["loadavg"] = load()
            say(f"  import {b['import_ms']} ms, first call (snapshot load) {b['first_call_ms']} ms")
            say(f"  demo users: {fmt(b['profile'])}; with context: {fmt(b['profile_context'])}")
            say(f"  cold users: {fmt(b['cold_user'])}; profile read alone: {fmt(b['profile_read_only'])}")
            say(f"  live catalog refresh alone (by_update Query, empty): {fmt(b['catalog_refresh'])}; "
                f"demo users with the refresh held off: {fmt(b['profile_no_refresh'])}")
            say(f"  statuses {b['statuses']}   load {b['loadavg']}")

            say("1c. end to end over HTTP (local API -> worker process -> moto) ...")
            figures["http"] = c = bench_http(api, users, args.requests)
            c["loadavg"] = load()
            say(f"  demo users: {fmt(c['profile'])}; with context: {fmt(c['profile_context'])}; "
                f"cold users: {fmt(c['cold_user'])}")
            say(f"  statuses {c['statuses']}   load {c['loadavg']}")

            say(f"2. event -> changed top {K} for {args.users} fresh users "
                f"(poll every {POLL_SECONDS * 1000:.0f} ms) ...")
            figures["event_to_change"] = e = bench_freshness(api, args.users)
            e["loadavg"] = load()
            say(f"  changed {e['changed']}/{e['users']} (timeouts {e['timeouts']}): p50 {e['p50_s']} s, "
                f"p90 {e['p90_s']} s, max {e['max_s']} s, min {e['min_s']} s; "
                f"POST /events {fmt(e['post_events'])}   load {e['loadavg']}")
            children = descendants(os.getpid())
            stop_began = time.perf_counter()
        figures["start"]["stack_stop_s"] = round(time.perf_counter() - stop_began, 2)
    left = still_running(children)
    figures["start"]["processes_seen"] = len(children)
    figures["start"]["leftover_processes"] = left
    if left:
        say(f"  processes left running after LocalStack.__exit__: {left}")

    if args.quick:
        figures["make_run"] = None
        say("3b. make run: skipped (--quick)")
    else:
        say("3b. make run (second start) ...")
        figures["make_run"] = m = bench_make_run()
        m["loadavg"] = load()
        if m["stale_steps_skipped"]:
            say(f"  note: `make -n run` wanted to rebuild first ({len(m['stale_steps_skipped'])} steps); "
                f"ran `{m['command']}` instead to time the second start")
        say(f"  `{m['command']}`: API up {m['api_up_s_wall']} s, ready {m['ready_s_wall']} s wall "
            f"(it printed {m['ready_s_reported']} s); SIGINT -> exit code {m['exit_code']} in {m['stop_s']} s; "
            f"printed 'stopped': {m['printed_stopped']}; leftovers {m['leftover_processes']}   load {m['loadavg']}")
        for line in m["output_tail"]:
            say(f"    | {line}")

    figures["loadavg_end"] = load()
    figures["wall_s"] = round(time.perf_counter() - began, 1)
    say(f"done in {figures['wall_s']} s, load average {figures['loadavg_end']}")
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
