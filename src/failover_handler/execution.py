"""Running a plan's steps under the lock: independent ones in parallel, each recorded once, resumable.

Each step starts as soon as the steps it depends on are done (``runbook.DEPENDS_ON``: processing waits for
the database), so the execution takes about as long as its longest chain, not the sum of its steps. A step
that completes is recorded in the control record (renewing the lease) before anything that depends on it
starts, so a crash at any point resumes after the last recorded step and no recorded step runs again. A step
that was in flight when the invocation died is not recorded and runs again; every step checks the state it
sets first (promotion, mappings, the gate), and the notice is sent at least once (the same execution id, so
an on-call tool can fold a repeat). A best-effort
step that fails (fencing an unreachable peer) is recorded as ``skipped`` and counts as done; any other
failure ends the invocation with the lease released, so the next one resumes at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from failover_handler.runbook import AWS_ERRORS, BEST_EFFORT, DEPENDS_ON, Order, Runbook
from tandem_core.control import ControlStore


@dataclass
class StepRecord:
    name: str
    started_at: float
    finished_at: float | None = None
    outcome: str = "running"  # completed | skipped | failed
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass
class Outcome:
    outcome: str  # completed | failed
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def failed_steps(self) -> list[str]:
        return [s.name for s in self.steps if s.outcome == "failed"]


def execute(
    order: Order,
    pending: Sequence[str],
    done: Sequence[str],
    runbook: Runbook,
    control: ControlStore,
    *,
    lease_seconds: float,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Run ``pending`` (the plan's steps not yet in ``done``) and record each in the control record."""
    finished = set(done)
    waiting = [s for s in pending if s not in finished]
    result = Outcome("completed")
    running: dict[Future[str], StepRecord] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(waiting)), thread_name_prefix="step") as pool:
        while waiting or running:
            for step in [s for s in waiting if all(d in finished for d in DEPENDS_ON.get(s, ()))]:
                waiting.remove(step)
                record = StepRecord(step, clock())
                result.steps.append(record)
                running[pool.submit(runbook.run, step, order)] = record
            if not running:  # what is left waits for a step that failed
                break
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                record = running.pop(future)
                record.finished_at = clock()
                try:
                    record.detail, record.outcome = future.result(), "completed"
                except AWS_ERRORS as exc:
                    record.detail = _one_line(exc)
                    record.outcome = "skipped" if record.name in BEST_EFFORT else "failed"
                if record.outcome == "failed":
                    result.outcome = "failed"
                    continue
                control.step_done(order.execution_id, record.name, clock(), lease_seconds)
                finished.add(record.name)
    return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]
