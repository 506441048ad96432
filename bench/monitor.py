"""The replication monitor's cost per run, on the twin: wall time of one pass and AWS calls of one run.

The monitor runs in this process with the DR region's Lambda environment as the twin's Lambda API reports
it (GetFunctionConfiguration), pointed at the twin's DR endpoint - the handler's own code and clients, the
Aurora observer reached through the twin's Lambda Invoke, the peer's ingress probed over HTTP. Every AWS call
is counted on the client session (``before-call``, once per API call whatever the retries).

- ``monitor_run_seconds``: one measurement pass (PROBE_COUNT=1: no pacing sleeps), median of ``runs``;
  target <= 1 s.
- ``monitor_calls_per_run``: the AWS calls of one run as deployed (the template's 6 probe rounds); target
  <= 15.
- the baseline, measured in the same run: as many DynamoDB GetItem round trips to the same endpoint as
  the pass makes calls - the floor of what its calls alone cost here; the ratio is what the monitor adds.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import median, verdict

TARGET_SECONDS = 1.0
TARGET_CALLS = 15
FUNCTION = "replication_monitor"
DR = "us-west-2"
SCALE = 10.0  # the twin's clock: its own monitors reach a steady state in ~30 s


@dataclass(frozen=True)
class MonitorCost:
    pass_seconds: list[float]
    pass_calls: int
    run_calls: int
    run_seconds: float
    baseline_seconds: list[float]
    verdict: str

    @property
    def ratio(self) -> float:
        return median(self.pass_seconds) / median(self.baseline_seconds)


def lambda_environment(status: dict[str, Any], function: str = FUNCTION) -> dict[str, str]:
    """A function's environment in DR, as Lambda would give it: the configured variables plus the runtime's."""
    from tandem.local import emulator_client

    endpoint = status["regions"][DR]["endpoint"]
    name = status["regions"][DR]["functions"][function]["name"]
    config = emulator_client("lambda", DR, endpoint).get_function_configuration(FunctionName=name)
    return {
        **config["Environment"]["Variables"],
        "AWS_REGION": DR, "AWS_DEFAULT_REGION": DR, "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_LAMBDA_FUNCTION_NAME": name,
        "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
    }  # fmt: skip


def _one_run(env: dict[str, str], calls: list[str]) -> tuple[float, int, str]:
    """Wall time, AWS calls and verdict of one run of the handler's monitor under ``env``."""
    from replication_monitor import app
    from replication_monitor.metrics import EmfSink
    from tandem.local import function_environment

    with function_environment(env), contextlib.redirect_stdout(io.StringIO()):  # the EMF lines are not the bench's
        app.build_monitor.cache_clear()
        monitor = app.build_monitor()
        calls.clear()
        started = time.perf_counter()
        report = monitor.run(EmfSink(DR))
        return time.perf_counter() - started, len(calls), str(report["verdict"])


def wait_ready(status: dict[str, Any], timeout: float = 120.0) -> None:
    """Until both regions' own monitors have made the twin's steady state (a ready DR region)."""
    from tandem.local import emulator_client
    from tandem_core.heartbeat import from_attributes
    from tandem_core.readiness import readiness_key

    table = status["regions"][DR]["resources"]["ledger_table"]
    db = emulator_client("dynamodb", DR, status["regions"][DR]["endpoint"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = db.get_item(TableName=table, Key=readiness_key(DR), ConsistentRead=True).get("Item")
        if item is not None and from_attributes(item)["verdict"] == "ready":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the twin's DR region was not ready within {timeout:.0f} s")


def measure(runs: int = 7) -> MonitorCost:
    from tandem.local import emulator_client
    from tandem.twin import launcher
    from tandem_core import clients

    with tempfile.TemporaryDirectory(prefix="tandem-bench-twin-") as tmp:
        status = launcher.start(Path(tmp), scale=SCALE)
        try:
            wait_ready(status)
            env = lambda_environment(status)
            calls: list[str] = []
            clients.client.cache_clear()  # the handler's clients, built on the session that counts
            clients.session().register("before-call", lambda model, **_: calls.append(model.name))
            single = {**env, "PROBE_COUNT": "1"}
            _one_run(single, calls)  # warm: imports, clients, connections
            passes = [_one_run(single, calls) for _ in range(runs)]
            run_seconds, run_calls, last_verdict = _one_run(env, calls)

            table = status["regions"][DR]["resources"]["ledger_table"]
            db = emulator_client("dynamodb", DR, status["regions"][DR]["endpoint"])
            key = {"pk": {"S": "HEARTBEAT#us-east-1"}, "sk": {"S": "HEARTBEAT"}}
            baseline = []
            for _ in range(runs):
                started = time.perf_counter()
                for _ in range(passes[0][1]):
                    db.get_item(TableName=table, Key=key, ConsistentRead=True)
                baseline.append(time.perf_counter() - started)
        finally:
            launcher.stop(Path(tmp))
    return MonitorCost(
        pass_seconds=[p[0] for p in passes], pass_calls=passes[0][1], run_calls=run_calls,
        run_seconds=run_seconds, baseline_seconds=baseline, verdict=last_verdict,
    )  # fmt: skip


def report(cost: MonitorCost) -> list[str]:
    seconds = median(cost.pass_seconds)
    return [
        f"  one pass  : {seconds * 1000:.0f} ms median of {len(cost.pass_seconds)}, {cost.pass_calls} AWS calls "
        f"(target <= {TARGET_SECONDS:g} s: {'PASS' if seconds <= TARGET_SECONDS else 'MISS'})",
        f"  one run   : {cost.run_calls} AWS calls in {cost.run_seconds:.1f} s with the template's probe rounds, "
        f"verdict {cost.verdict} (target <= {TARGET_CALLS}: {'PASS' if cost.run_calls <= TARGET_CALLS else 'MISS'})",
        f"  baseline  : {cost.pass_calls} DynamoDB GetItem round trips, {median(cost.baseline_seconds) * 1000:.0f} ms",
        f"  ratio     : {verdict(cost.ratio, 3.0, higher_is_better=False)}  (a pass / its calls alone)",
    ]
