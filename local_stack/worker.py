"""One Lambda execution environment: imports a handler once, then serves invocations.

Reads one JSON request per line on stdin ({"event", "request_id", "deadline_ms"}) and
answers one JSON line on the stdout it started with; the handler's own prints and
logs go to stderr, as Lambda sends them to CloudWatch.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback


class Context:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, request_id: str, deadline_ms: float) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        self.invoked_function_arn = os.environ["RECSYS_LOCAL_FUNCTION_ARN"]
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def main() -> None:
    # Ctrl-C reaches the whole process group; the stack, not each worker, decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    module_name, function_name = sys.argv[1].rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        answers.write(json.dumps({"ready": True}) + "\n")
    except Exception as error:  # noqa: BLE001 -- reported to the stack as an init error
        traceback.print_exc()
        answers.write(json.dumps({"ready": False, "error": f"{type(error).__name__}: {error}"}) + "\n")
        return
    for line in sys.stdin:
        request = json.loads(line)
        context = Context(request["request_id"], request["deadline_ms"])
        try:
            answer = {"result": handler(request["event"], context)}
        except Exception as error:  # noqa: BLE001 -- a function error, as Lambda reports it
            traceback.print_exc()
            answer = {"error": {"errorType": type(error).__name__, "errorMessage": str(error)}}
        answers.write(json.dumps(answer, default=str) + "\n")


if __name__ == "__main__":
    main()
