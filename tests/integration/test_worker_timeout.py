"""A function's Timeout, as Lambda enforces it: an invocation that outlives it is stopped, reported as
``Sandbox.Timedout``, and the next invocation gets a new execution environment (a cold start)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tandem.lambda_runtime import FunctionSpec
from tandem.twin.worker import Worker

HANDLER = """
import os
import time

def handler(event, context):
    time.sleep(event["sleep"])
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis(),
            "memory": context.memory_limit_in_mb}
"""


def test_an_invocation_longer_than_the_timeout_is_stopped_and_the_environment_replaced() -> None:
    with tempfile.TemporaryDirectory() as d:
        code = Path(d) / "code"
        code.mkdir()
        (code / "slow.py").write_text(HANDLER, encoding="utf-8")
        env = {"AWS_LAMBDA_FUNCTION_NAME": "slow", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}
        worker = Worker(FunctionSpec("slow", "SlowFunction", "slow.handler"), "us-east-1", env, Path(d) / "slow.log",
                        code_dir=code, timeout=1.5)  # fmt: skip
        try:
            first = worker.invoke({"sleep": 0})
            assert first["ok"], first
            assert first["response"]["memory"] == 256
            assert 0 < first["response"]["remaining_ms"] <= 1500  # the context counts down the function's Timeout
            stopped = worker.invoke({"sleep": 5})
            assert stopped == {"ok": False, "errorType": "Sandbox.Timedout",
                               "errorMessage": "Task timed out after 1.50 seconds"}  # fmt: skip
            after = worker.invoke({"sleep": 0})
            assert after["ok"], after
            assert after["response"]["pid"] != first["response"]["pid"]  # a new execution environment
            assert worker.restarts == 1
        finally:
            worker.stop()
