"""The steady scenario: the seeded workload straight into the primary's queue, no disruption - the audit of
the processing path alone (poison, duplicates, balances), on the fast x600 clock.

The twin's event source mapping hands batches to the unmodified handler; SQS's redrive moves poison to the
DLQ after maxReceiveCount receives. The number of invocations is CloudWatch's, over the run's window of twin
time. On a reused twin, what earlier runs left in the DLQ is taken first and reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem.drill.audit import Target, audit, processor_invocations, snapshot
from tandem.drill.queues import produce, take_dlq, twin_clock, wait_drained, window_start
from tandem.drill.workload import Workload


def run_steady(
    state_dir: Path, target: Target, scale: float, wl: Workload, bodies: list[str], deadline: float,
    stage: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Run the workload and audit it; ``stage`` is told each step (a failure is reported in the last one)."""
    stage("taking what earlier runs left in the DLQ")
    leftover_dlq = take_dlq(target)
    before = snapshot(target)
    since = window_start(state_dir, scale)
    stage("sending the workload")
    produce(target, bodies, deadline)
    stage("waiting for the queue to drain")
    wait_drained(target, deadline, stage)
    until = math.floor(twin_clock(state_dir)) + 1
    stage("auditing")
    outcome = audit(target, wl, before, take_dlq(target))
    stage("counting invocations")
    invocations = processor_invocations(target, since, until, deadline, stage)
    return {**outcome, "processing": {"invocations": invocations, "dlq_left_from_earlier": len(leftover_dlq)}}
