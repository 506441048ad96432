"""One invocation of the failover handler: read the situation, plan, and - when allowed - act under the lock.

- ``status``: the control record and the latest executions; changes nothing.
- ``plan``: the dry run (rule 8) - the same situation and the same planner as a real run; changes nothing.
- ``failover`` / ``switchover`` / ``failback`` and the alarm: refused (recorded and paged when a human must
  know: readiness, bootstrap guard, minimum delay) or executed: lock, steps, record, metrics. A duplicate of
  a running execution answers ``refused`` with ``execution_running`` and records nothing - except to the
  alarm: there it raises :class:`ExecutionInProgress`, so Lambda retries the event (1 and 3 minutes later)
  and a run whose invocation died is resumed without a human once its lease lapsed.
- ``resume`` (the monitor of the region being activated, every run while its execution is stuck): goes on
  with a running execution for this region whose lease lapsed; never starts one.

A step that fails never wedges the failover: the record stays ``running`` with its lease released, the
failure is paged, and the execution is resumed - by the alarm's retry (the invocation raises
:class:`ExecutionFailed`), and by this region's monitor every minute after that. Only the region being
activated takes an execution over, and its steps act for the region the record activates.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from failover_handler.events import Action, Request
from failover_handler.execution import StepRecord, execute
from failover_handler.history import ExecutionLog, ExecutionRecord, steps_of
from failover_handler.plan import OVERRIDABLE, PLANNED_OVERRIDABLE, Plan, Situation, make_plan
from failover_handler.reconcile import Reconciler
from failover_handler.runbook import AWS_ERRORS, Order, Runbook
from failover_handler.witness import Sighting
from tandem_core.control import Acquired, ControlStore, LockRefused, NewExecution, Owed, State, primary_region
from tandem_core.settings import FailoverSettings

#: refusals worth a record and a page: a human must know the region could not take over
NOTABLE = OVERRIDABLE | PLANNED_OVERRIDABLE | {
    "peer_never_seen_healthy", "peer_unreachable", "lost_to_concurrent_execution", "peer_answers",
    "peer_healthy_from_outside", "peer_ledger_failing",
}  # fmt: skip
#: what a page says about a refusal, beyond the reasons
HINTS = {
    "peer_healthy_from_outside": "THIS region's own fault is suspected: the peer does not answer from here, but "
    "Route53's health checkers outside this region see it healthy - check this region's network egress and the "
    "replication into it; the peer keeps running. `tandem failover --force` only if you know the peer is lost",
    "peer_answers": "the alarm fired but the peer answers now and its ledger commits: the blip is over, or the "
    "fault was on this side; nothing was changed",
}
DEFAULT_HINT = (
    "failover --force overrides readiness and the minimum delay; switchover or failback --force overrides the "
    "minimum delay and a reconciliation still owed"
)
#: how long a new execution waits for its lock to show in the peer's replica (the global table replicates
#: in about a second) before it acts - see ControlStore.confirm
CONFIRM_SECONDS = 10.0
#: refusals that make the rest moot: nothing to record (the alarm's retries, duplicates, a late event)
MOOT = frozenset({"already_active", "execution_running"})


class ExecutionInProgress(RuntimeError):
    """An alarm event met a live lease: a function error on purpose, so Lambda's asynchronous retry comes back.

    Answering ``refused`` would end the event for good; if the lease's holder died, nothing would resume the
    run until an operator came (the alarm stays in ALARM and sends no new event)."""


class ExecutionFailed(RuntimeError):
    """An alarm's execution failed a step: a function error on purpose, so Lambda's retry resumes it."""


#: a lease outlives the invocation holding it by this much, whatever FailoverLeaseSeconds says: an invocation
#: still running must never find its execution taken over (two invocations would run one execution's steps)
LEASE_MARGIN_SECONDS = 5.0


class ExecutionMetrics(Protocol):
    def execution(self, outcome: str, seconds: float, rpo_estimate_seconds: float | None) -> None: ...


def no_witness() -> Sighting:
    return Sighting(None, detail="no witness configured (PeerEndpointHealthCheckId is empty)")


@dataclass(frozen=True)
class Facts:
    """How the service reads what the plan judges (each a callable, so ``plan`` and a run read the same)."""

    readiness: Callable[[str], dict[str, Any] | None]  # a region's readiness record from this region's replica
    peer_reachable: Callable[[], bool]  # the peer's ingress and APIs answer now (short timeouts)
    #: the peer says, with a fresh heartbeat in our replica, that its ledger cannot commit
    peer_ledger_failing: Callable[[], bool] = lambda: False
    #: Route53's checkers' view of the peer (None: no view, no witness configured)
    peer_seen_from_outside: Callable[[], Sighting] = lambda: no_witness()


class FailoverService:
    def __init__(
        self,
        settings: FailoverSettings,
        region: str,
        *,
        control: ControlStore,
        history: ExecutionLog,
        runbook: Runbook,
        facts: Facts,
        metrics: ExecutionMetrics,
        reconciler: Reconciler | None = None,
        peer_control: ControlStore | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """``peer_control``: the control record in the peer's replica (short timeouts), where a new execution
        checks that its lock won before it acts."""
        self._s = settings
        self._region = region
        self._control = control
        self._history = history
        self._runbook = runbook
        self._facts = facts
        self._metrics = metrics
        self._reconciler = reconciler
        self._peer_control = peer_control
        self._clock = clock
        self._sleep = sleep
        self._new_id = new_id

    @property
    def primary_region(self) -> str:
        return primary_region(self._region, self._s.region_role, self._s.peer_region)

    def situation(self, automatic: bool = False) -> Situation:
        """What the plan judges. The peer is probed on every trigger, the alarm's too (short timeouts, one
        attempt): an alarm whose peer answers again moves nothing - unless the peer says its ledger cannot
        commit. The witness (Route53's checkers) is asked only by an alarm whose peer does not answer."""
        reachable = self._facts.peer_reachable()
        witness = self._facts.peer_seen_from_outside() if automatic and not reachable else None
        return Situation(
            region=self._region, peer_region=self._s.peer_region, primary_region=self.primary_region,
            control=self._control.read(), readiness=self._facts.readiness(self._region),
            peer_reachable=reachable, now=self._clock(), min_delay_seconds=self._s.min_delay_seconds,
            peer_ledger_failing=self._facts.peer_ledger_failing(),
            peer_seen_from_outside=None if witness is None else witness.healthy,
            witness=None if witness is None else witness.detail,
        )  # fmt: skip

    def handle(self, request: Request, seconds_left: float = 0.0) -> dict[str, Any]:
        """``seconds_left``: how long this invocation may still run (Lambda's remaining time)."""
        if request.action is Action.STATUS:
            return self.status()
        if request.action is Action.RECONCILE:
            return self.reconcile(request)
        s = self.situation(request.automatic)
        plan = make_plan(request, s)
        if request.action is Action.PLAN:
            return {"action": "plan", "plan": plan.as_dict(), "control": s.control.as_dict(), "changed": False}
        if not plan.allowed:
            return self._refuse(request, plan, s)
        return self._run(request, plan, s, max(self._s.lease_seconds, seconds_left + LEASE_MARGIN_SECONDS))

    def status(self) -> dict[str, Any]:
        return {
            "action": "status",
            "region": self._region,
            "control": self._control.read().as_dict(),
            "executions": [r.as_dict() for r in self._history.latest(10)],
        }

    def reconcile(self, request: Request) -> dict[str, Any]:
        """Only in the active region, never during an execution; one run per epoch that owes it, each recorded
        like an execution (``action`` reconcile, outcome completed | waiting | partial). Nothing owed: the
        parts run once for the peer (an operator's sweep of queues and DLQs) and nothing is marked."""
        control = self._control.read()
        refused = [reason for reason, applies in (
            ("not_active", control.active_region != self._region),
            ("execution_running", control.state is State.RUNNING),
            ("reconcile_not_configured", self._reconciler is None),
        ) if applies]  # fmt: skip
        if refused:
            return {"action": "reconcile", "outcome": "refused", "reasons": refused, "control": control.as_dict()}
        assert self._reconciler is not None
        started = self._clock()
        owed = list(control.owed)
        sweep = not owed
        if sweep:
            since = control.started_at if control.started_at is not None else started
            owed = [Owed(control.epoch, self._s.peer_region, since)]
        records = []
        for debt in owed:
            report = self._reconciler.run(
                debt, datetime.fromtimestamp(debt.since - self._s.reconcile_lookback_seconds, UTC),
                datetime.fromtimestamp(self._clock(), UTC),
                first_fenced=None if sweep else functools.partial(self._control.old_region_fenced, debt),
                clock=self._clock,
            )  # fmt: skip
            outcome = "completed" if report["complete"] else "waiting" if not _failed(report) else "partial"
            record = ExecutionRecord(
                self._new_id(), request.trigger, "reconcile", None, self._region, started, outcome,
                reasons=list(report["waiting_for"]), finished_at=self._clock(), epoch=debt.epoch,
                steps=list(report.pop("steps")), report=report,
            )  # fmt: skip
            self._history.write(record)
            if report["complete"] and not sweep:
                self._control.mark_reconciled(debt, self._clock())  # the monitor stops asking for this epoch
            records.append(record)
        worst = next((o for o in ("partial", "waiting") if any(r.outcome == o for r in records)), "completed")
        return {
            "action": "reconcile", "outcome": worst, "execution": records[0].as_dict(), "report": records[0].report,
            "executions": [r.as_dict() for r in records],
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------ refusing
    def _refuse(self, request: Request, plan: Plan, s: Situation, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        reasons = [*plan.refused, *extra]
        if request.automatic and "execution_running" in reasons:
            c = s.control
            raise ExecutionInProgress(
                f"execution {c.execution_id} ({c.action}) is running in {c.active_region}, lease until "
                f"{c.lease_until}; this event's retry resumes it if its invocation died"
            )
        record = None
        if NOTABLE & set(reasons) and not MOOT & set(reasons):
            now = self._clock()
            record = ExecutionRecord(
                self._new_id(), request.trigger, plan.action.value, None if plan.mode is None else plan.mode.value,
                self._region, now, "refused", reasons, now, rpo_estimate_seconds=plan.rpo_estimate_seconds,
            )  # fmt: skip
            self._history.write(record)
            own_fault = "peer_healthy_from_outside" in reasons
            self._runbook.page(
                f"Tandem {plan.action.value} to {self._region} REFUSED"
                + (f": {self._region}'s own fault suspected, {self._s.peer_region} is healthy" if own_fault else ""),
                {"execution_id": record.id, "reasons": reasons, "readiness_reasons": list(plan.readiness_reasons),
                 "witness": s.witness,
                 "hint": next((HINTS[r] for r in reasons if r in HINTS), DEFAULT_HINT)},
            )  # fmt: skip
        return {
            "action": plan.action.value, "outcome": "refused", "reasons": reasons, "plan": plan.as_dict(),
            "execution": None if record is None else record.as_dict(), "control": s.control.as_dict(),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------ running
    def _run(self, request: Request, plan: Plan, s: Situation, lease_seconds: float) -> dict[str, Any]:
        assert plan.mode is not None
        new = NewExecution(
            self._new_id(), plan.action.value, plan.mode.value, self._region,
            min_delay_seconds=0.0 if request.force else self._s.min_delay_seconds,
        )  # fmt: skip
        try:
            acquired = self._control.acquire(new, self._clock(), lease_seconds)
        except LockRefused as refused:
            return self._refuse(request, Plan(plan.action, self._region, plan.mode, (refused.reason,), (), None), s)
        if not acquired.resumed:  # two regions may each have taken it in their own replica: one survives
            try:
                self._control.confirm(
                    new.execution_id, self._peer_control, timeout=CONFIRM_SECONDS, clock=self._clock, sleep=self._sleep
                )
            except LockRefused as lost:
                return self._refuse(request, Plan(plan.action, self._region, plan.mode, (lost.reason,), (), None), s)
        record = self._record_for(acquired, request, plan)
        target = acquired.record.active_region  # the record's target; only it takes an execution over
        assert target == self._region, f"execution {record.id} activates {target}, not {self._region}"
        order = Order(
            record.id, record.action, str(record.mode), target,
            {"trigger": record.trigger, "epoch": acquired.record.epoch,
             "previous_region": acquired.record.previous_region, "rpo_estimate_seconds": record.rpo_estimate_seconds},
        )  # fmt: skip
        done = acquired.record.steps_done
        try:
            outcome = execute(
                order, [st for st in plan.steps if st not in done], done,
                self._runbook, self._control, lease_seconds=lease_seconds, clock=self._clock,
            )  # fmt: skip
        except BaseException:
            self._control.release(record.id, self._clock())
            raise
        record.steps += steps_of(outcome.steps)
        if outcome.outcome == "completed":
            self._control.finish(record.id, "completed", self._clock())
            record.outcome, record.finished_at = "completed", self._clock()
            self._metrics.execution("completed", record.finished_at - record.started_at, record.rpo_estimate_seconds)
        else:
            self._control.release(record.id, self._clock())
            record.outcome = "failed"
            record.reasons = [f"step_failed:{name}" for name in outcome.failed_steps]
            self._metrics.execution("failed", self._clock() - record.started_at, record.rpo_estimate_seconds)
        self._history.write(record)
        if record.outcome == "failed":
            self._page_failed(record, request, outcome.steps)
            if request.automatic:
                raise ExecutionFailed(
                    f"execution {record.id} ({record.action}, {record.mode}) failed {', '.join(outcome.failed_steps)};"
                    " Lambda's retry of this event resumes it"
                )
        return {
            "action": record.action, "outcome": record.outcome, "resumed": acquired.resumed,
            "execution": record.as_dict(), "control": self._control.read().as_dict(),
        }  # fmt: skip

    def _page_failed(self, record: ExecutionRecord, request: Request, steps: list[StepRecord]) -> None:
        """A failed step pages (best effort: the record says it too) with how the execution goes on."""
        failed = {s.name: s.detail for s in steps if s.outcome == "failed"}
        with contextlib.suppress(*AWS_ERRORS):
            self._runbook.page(
                f"Tandem {record.action} to {self._region} FAILED at {', '.join(failed)}",
                {"execution_id": record.id, "mode": record.mode, "trigger": request.trigger, "failed_steps": failed,
                 "hint": "the record stays running: the alarm's retry and this region's monitor (every minute) "
                         "resume it; `tandem failover --force` resumes a switchover the unreachable peer cannot "
                         "complete as a failover"},
            )  # fmt: skip

    def _record_for(self, acquired: Acquired, request: Request, plan: Plan) -> ExecutionRecord:
        c = acquired.record
        assert c.execution_id is not None
        assert c.started_at is not None
        if acquired.resumed:
            existing = self._history.get(c.started_at, c.execution_id)
            if existing is not None:
                existing.outcome, existing.mode = "running", c.mode  # a forced failover may replace a switchover
                listed = {str(step["name"]) for step in existing.steps}
                existing.steps += [
                    {"name": name, "started_at": None, "finished_at": None, "outcome": "completed",
                     "detail": "done by an invocation that ended before it could write this record"}
                    for name in c.steps_done if name not in listed
                ]  # fmt: skip
                return existing
        record = ExecutionRecord(
            c.execution_id, request.trigger, str(c.action), c.mode, self._region, c.started_at,
            rpo_estimate_seconds=plan.rpo_estimate_seconds, epoch=c.epoch,
        )  # fmt: skip
        self._history.write(record)
        return record


def _failed(report: dict[str, Any]) -> bool:
    """A part hit an error (as opposed to only waiting for the old region to stop)."""
    return any(step["outcome"] == "failed" for step in report.get("steps", []))
