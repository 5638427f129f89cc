"""Ctrl-C stops `make run` and everything it started within 5 s, even while the events
function is retrying records."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

from local_stack.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "ctrl-c-key"


def descendants(pid: int) -> set[int]:
    """Every live process under pid, from /proc (psutil is not installed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigint_stops_the_stack_and_every_process_it_started_while_records_are_retried(tmp_path, encoder_model_dir):
    port, logs = free_port(), tmp_path / "logs"
    environment = {**os.environ, "RECSYS_PORT": str(port), "RECSYS_API_KEY": KEY, "RECSYS_ADMIN_KEY": KEY + "-admin"}
    out = open(tmp_path / "out.txt", "wb")
    # As `make run` runs it: the real entry point, in its own process group (the terminal's).
    stack = subprocess.Popen([sys.executable, "-m", "local_stack", "--no-demo", "--log-dir", str(logs)], cwd=ROOT,
                             env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while b"ready in" not in (tmp_path / "out.txt").read_bytes():
            assert stack.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
            time.sleep(0.2)
        names = dict(line.split("=", 1) for line in (tmp_path / "local-stack.env").read_text().split())
        # The events function now fails every event (its raw log is gone): each batch is bisected and retried.
        boto3.client("s3", endpoint_url=names["AWS_ENDPOINT_URL"], region_name=names["AWS_REGION"],
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).delete_bucket(Bucket=names["RAW_EVENTS_BUCKET"])
        events = [{"event_id": f"e{n}", "user_id": f"u{n}", "type": "click", "item_id": "1"} for n in range(500)]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/events", json.dumps({"events": events}).encode(),
                                         {"x-api-key": KEY, "Content-Type": "application/json"}, method="POST")
        assert urllib.request.urlopen(request, timeout=60).status == 202
        log = logs / "EventsFunction.log"
        while not log.exists() or log.read_text(errors="replace").count("event not applied") < 600:
            assert time.monotonic() < deadline + 120, "the events function never retried"
            time.sleep(0.2)
        started = descendants(stack.pid)
        assert len(started) >= 5, "moto and a worker per function"

        os.killpg(stack.pid, signal.SIGINT)
        sent = time.monotonic()
        while (alive(stack.pid) or any(alive(p) for p in started)) and time.monotonic() - sent < 10:
            time.sleep(0.05)
        took = time.monotonic() - sent
        left = [p for p in started | {stack.pid} if alive(p)]
        assert not left and took < 5, f"{left} still running {took:.1f} s after SIGINT"
        assert stack.wait(timeout=1) == 0 and b"stopped in" in (tmp_path / "out.txt").read_bytes()
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
        for pid in descendants(stack.pid):
            os.kill(pid, signal.SIGKILL)
        out.close()
