"""Runs each function of the template in its own worker processes, with its own environment."""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from local_stack.template import Function, Template

WORKER = Path(__file__).with_name("worker.py")


class FunctionError(Exception):
    """The handler raised, timed out, or could not start; `payload` is Lambda's error shape."""

    def __init__(self, payload: dict[str, str]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


class Worker:
    """One execution environment: a process with its own temporary folder (Lambda's /tmp, where
    a function downloads its release's files), removed when the worker is stopped."""

    def __init__(self, function: Function, environment: dict[str, str], log: Path) -> None:
        self.function = function
        self._log = open(log, "ab")
        self._tmp = tempfile.mkdtemp(prefix=f"recsys-{function.logical_id}-")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), function.handler],
            cwd=function.code_dir, env={**environment, "TMPDIR": self._tmp}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def wait_ready(self) -> None:
        """Until the handler is imported; raises the init error if it could not be."""
        ready = self._answer(timeout=120)
        if not ready.get("ready"):
            self.stop()
            raise FunctionError({"errorType": "Runtime.InitError",
                                 "errorMessage": f"{self.function.logical_id}: {ready.get('error')}"})

    def _read(self) -> None:
        for line in self.process.stdout:
            self._answers.put(json.loads(line))
        self._answers.put({"error": {"errorType": "Runtime.ExitError", "errorMessage": "the worker exited"}})

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            return {"error": {"errorType": "Sandbox.Timedout",
                              "errorMessage": f"task timed out after {timeout:.0f} seconds"}}

    def invoke(self, event: dict[str, Any]) -> Any:
        deadline = time.time() + self.function.timeout
        try:
            self.process.stdin.write(json.dumps({"event": event, "request_id": str(uuid.uuid4()),
                                                 "deadline_ms": deadline * 1000}) + "\n")
        except (OSError, ValueError):  # the worker was stopped: its pipe is closed
            raise FunctionError({"errorType": "Runtime.ExitError", "errorMessage": "the worker exited"}) from None
        answer = self._answer(timeout=self.function.timeout)
        if "error" in answer:
            raise FunctionError(answer["error"])
        return answer["result"]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class FunctionPool:
    """Up to `concurrency` warm execution environments of one function."""

    def __init__(self, function: Function, environment: dict[str, str], log: Path, concurrency: int) -> None:
        self.function, self.environment, self.log = function, environment, log
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._all: list[Worker] = []
        self._lock = threading.Lock()
        self._concurrency = concurrency
        self._stopped = False
        self._idle.put(self._start())

    def _start(self) -> Worker:
        """A new worker, registered before it is ready, so that `stop` also ends one starting."""
        with self._lock:
            if self._stopped:
                raise FunctionError({"errorType": "Runtime.ExitError", "errorMessage": "the stack is stopping"})
            worker = Worker(self.function, self.environment, self.log)
            self._all.append(worker)
        worker.wait_ready()
        return worker

    def invoke(self, event: dict[str, Any]) -> Any:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                can_grow = len([w for w in self._all if w.alive]) < self._concurrency
            worker = self._start() if can_grow else self._idle.get()
        try:
            return worker.invoke(event)
        finally:
            if worker.alive:
                self._idle.put(worker)
            else:
                with self._lock:
                    self._all.remove(worker)
                    replace = self._idle.empty() and not self._all and not self._stopped
                if replace:
                    self._idle.put(self._start())

    def stop(self) -> None:
        """Kills every worker (an invocation in flight fails) and starts no other."""
        with self._lock:
            self._stopped = True
            workers = list(self._all)
        for worker in workers:
            worker.stop()

    def kill(self) -> None:
        """Kills every worker without waiting for anything (another thread may be stopping them)."""
        self._stopped = True
        for worker in list(self._all):
            if worker.alive:
                worker.process.kill()


def function_environment(template: Template, function: Function, endpoint: str) -> dict[str, str]:
    """What Lambda would give the function, plus the moto endpoint and the layers on the path."""
    paths = [str(function.code_dir)] + [str(d) for d in function.layer_dirs]
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **function.environment,
            "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": template.region, "AWS_DEFAULT_REGION": template.region,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": function.name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
            "RECSYS_LOCAL_FUNCTION_ARN": template.get_att(function.logical_id, "Arn"),
            "PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1"}
