"""The failover handler's own time on the critical path, on the twin.

Each sample is a fresh twin (x10) that reaches its steady state, then one forced operator failover run by
the handler's code in this process with the DR region's Lambda environment (as GetFunctionConfiguration
reports it), against the twin's endpoints - the real lock, steps and records.

- ``failover_overhead_seconds``: the execution's wall time minus the database promotion step (the wait for
  Aurora, which the handler does not control); target <= 1 s.
- ``failover_vs_longest_step``: the wall time divided by its longest step - close to 1 means the independent
  steps really ran side by side (the sum of the steps, printed too, is what a sequential run would take).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.monitor import SCALE, lambda_environment, wait_ready
from bench.stats import median, verdict

TARGET_OVERHEAD = 1.0
TARGET_PARALLEL = 1.5


@dataclass(frozen=True)
class Sample:
    total: float  # the handler's wall time for the whole request (plan, lock, steps, records)
    promote: float
    longest: float
    steps_sum: float
    outcome: str


def _one() -> Sample:
    from failover_handler import app
    from failover_handler.events import parse_request
    from tandem.local import function_environment
    from tandem.twin import launcher
    from tandem_core import clients

    with tempfile.TemporaryDirectory(prefix="tandem-bench-failover-") as tmp:
        status = launcher.start(Path(tmp), scale=SCALE)
        try:
            wait_ready(status)
            env = lambda_environment(status, "failover_handler")
            with function_environment(env), contextlib.redirect_stdout(io.StringIO()):
                clients.client.cache_clear()
                clients.peer_client.cache_clear()
                app.build_service.cache_clear()
                service = app.build_service()
                started = time.perf_counter()
                answer = service.handle(parse_request({"action": "failover", "force": True}))
                total = time.perf_counter() - started
        finally:
            launcher.stop(Path(tmp))
    steps = {s["name"]: s["finished_at"] - s["started_at"] for s in answer["execution"]["steps"]}
    return Sample(total, steps["promote_database"], max(steps.values()), sum(steps.values()), answer["outcome"])


def measure(samples: int = 3) -> list[Sample]:
    return [_one() for _ in range(samples)]


def report(runs: list[Sample]) -> tuple[dict[str, float], list[str]]:
    overhead = median([r.total - r.promote for r in runs])
    parallel = median([r.total / r.longest for r in runs])
    lines = [
        f"  executions : {len(runs)} (each on a fresh twin x{SCALE:g}), outcomes {sorted({r.outcome for r in runs})}",
        f"  wall time  : {median([r.total for r in runs]) * 1000:.0f} ms median; longest step "
        f"{median([r.longest for r in runs]) * 1000:.0f} ms; the steps one after another would take "
        f"{median([r.steps_sum for r in runs]) * 1000:.0f} ms",
        f"  overhead   : {overhead * 1000:.0f} ms beside the promotion "
        f"(target <= {TARGET_OVERHEAD:g} s: {'PASS' if overhead <= TARGET_OVERHEAD else 'MISS'})",
        f"  ratio      : {verdict(parallel, TARGET_PARALLEL, higher_is_better=False)}  (wall time / longest step)",
    ]
    return {"failover_overhead_seconds": overhead, "failover_vs_longest_step": parallel}, lines
