"""A scenario's figures, measured from the data once it is over: the failover record (detection, RTO, RPO),
the timeline, the picture's series and what the producers saw.

Every time here is wall-clock epoch seconds on the way in and emulated seconds from the scenario's zero on
the way out (:class:`Clocks`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.drill.observe import Clocks, TwinView
from tandem.drill.producers import Accepted, Sent
from tandem.drill.workload import Workload

OUTAGE_START = "outage start"


@dataclass
class Figures:
    """What a scenario's run left behind, and the figures computed from it."""

    view: TwinView
    clocks: Clocks
    zero: float  # the scenario's zero: the disruption's start (or the run's, when there was none)
    zero_label: str
    began: float  # when the run began (after the preparation)
    ended: float | None  # when the disruption ended (None: it did not)
    dns_answers: Sequence[tuple[float, str]]  # each change of the answer the producers saw: (wall, ingress URL)
    disruption_events: list[dict[str, Any]]  # the scenario's own timeline entries
    notes: list[str] = field(default_factory=list)  # where a figure could not be measured, and why

    @property
    def primary(self) -> str:
        return str(self.view.primary)

    @property
    def dr(self) -> str:
        return str(self.view.dr)

    def failover(
        self, failovers: list[dict[str, Any]], reconciles: list[dict[str, Any]], sent: Sent, active: str
    ) -> dict[str, Any]:
        """The failover part of the report: executions and refusals, detection, RTO, RPO, the timeline.

        ``reconciles``: every reconcile run, oldest first. Runs before the completed one waited (or ended
        partial) but did their parts: what they re-applied counts, and what they waited for is reported."""
        ran = [e for e in failovers if e["outcome"] != "refused"]  # refusals are records, not executions
        refused = [e for e in failovers if e["outcome"] == "refused"]
        execution = first_ran(failovers)
        done = next((i for i, e in enumerate(reconciles) if e["outcome"] == "completed"), None)
        runs = reconciles if done is None else reconciles[: done + 1]
        reconciled = None if done is None else reconciles[done]
        report = dict(reconciled.get("report", {})) if reconciled else {}
        reapplied = {t for run in runs for t in run.get("report", {}).get("journal", {}).get("reapplied_ids", [])}
        if runs:
            report["runs"] = len(runs)
            report["waited_for"] = sorted({r for run in runs if run["outcome"] == "waiting" for r in run["reasons"]})
            report["waited_seconds"] = (
                None if reconciled is None else self.clocks.since(runs[0]["started_at"], reconciled["started_at"])
            )
        promoted = step_end(execution, "promote_database")
        accepted_at = {transaction_id(a): a.wall_at for a in sent.accepted}
        stranded = (
            self.stranded(sent, active, promoted, reapplied) if execution and execution["mode"] == "failover" else set()
        )
        lost_times = [accepted_at[t] for t in reapplied | stranded if t in accepted_at]
        first = failovers[0] if failovers else None
        detected = None if first is None or self.zero_label != OUTAGE_START else first["started_at"]
        return {
            "clock_scale": self.view.scale, "zero": self.zero_label,
            "executions": len(ran), "refusals": len(refused),
            "refusal_reasons": sorted({r for e in refused for r in e.get("reasons") or []}),
            "outcome": None if execution is None else execution["outcome"],
            "mode": None if execution is None else execution["mode"],
            "detection_seconds": self.clocks.since(self.zero, detected),
            "rto_seconds": self.rto(sent, active, promoted if execution else self.ended),
            "rpo_seconds": self.clocks.since(min(lost_times), promoted) if lost_times and promoted else 0.0,
            "rpo_transactions": len(reapplied | stranded),
            "rpo_reapplied_from_journal": len(reapplied),
            "stranded_at_promotion": len(stranded),
            "stranded_applied_before_return": self.applied_before(active, stranded, self.ended),
            "rpo_estimate_seconds": None if execution is None else execution.get("rpo_estimate_seconds"),
            "outage_seconds": self.clocks.since(self.zero, self.ended),
            "timeline": self.timeline(failovers, runs)
            + ([{"event": f"{len(stranded)} accepted message(s) stranded in {self.primary} at promotion",
                 "at": self.clocks.since(self.zero, promoted)}] if stranded else []),
            "reconcile": report,
        }  # fmt: skip

    def stranded(self, sent: Sent, active: str, promoted: float | None, reapplied: set[str]) -> set[str]:
        """Accepted by the primary's ingress before the promotion, and applied only after it, not from the
        journal: they sat in the dead region's queue (not processed, so not journaled) - unavailable to DR until
        that region returned, lost with it if it never does. Part of the RPO, whatever reconciliation did."""
        if promoted is None:
            return set()
        primary = self.view.ingress(self.primary)
        candidates = {
            t for a in sent.accepted if a.url == primary and a.wall_at < promoted and (t := transaction_id(a))
        }
        committed = self.view.committed_at(active, candidates - reapplied)
        return {t for t, at in committed.items() if at > promoted}

    def applied_before(self, active: str, ids: set[str], returned: float | None) -> int:
        """How many of ``ids`` the active ledger committed before the old region returned (all, if it has not)."""
        committed = self.view.committed_at(active, ids) if ids else {}
        return sum(1 for at in committed.values() if returned is None or at < returned)

    def rto(self, sent: Sent, active: str, recovered: float | None) -> float | None:
        """Zero -> the first commit, once the region active at the end took writes (DR's promotion finished,
        or the primary answered again), of a transaction accepted after zero."""
        after = [t for a in sent.accepted if a.wall_at >= self.zero and (t := transaction_id(a))]
        commits = [at for at in self.view.committed_at(active, after).values() if at >= (recovered or self.zero)]
        return self.clocks.since(self.zero, min(commits)) if commits else None

    def timeline(self, failovers: list[dict[str, Any]], reconciles: list[dict[str, Any]]) -> list[dict[str, Any]]:
        since = self.clocks.since
        events = list(self.disruption_events)
        for record in [*failovers, *reconciles]:
            if record["action"] == "reconcile" and record["outcome"] == "waiting":
                events.append({"event": f"reconcile waits for {'; '.join(record.get('reasons') or [])}",
                               "at": since(self.zero, record["started_at"])})  # fmt: skip
            if record["outcome"] == "refused":
                events.append({"event": f"{record['action']} refused: {', '.join(record.get('reasons') or [])}",
                               "at": since(self.zero, record["started_at"])})  # fmt: skip
            for step in record.get("steps", []):
                events.append({"event": f"{record['action']}: {step['name']} {step['outcome']}",
                               "at": since(self.zero, step.get("finished_at")),
                               "started": since(self.zero, step.get("started_at"))})  # fmt: skip
        for wall, url in self.dns_answers[1:]:
            events.append({"event": f"DNS answers {self.region_of(url)}", "at": since(self.zero, wall)})
        return sorted(events, key=lambda e: (e["at"] is None, e["at"] or 0.0))

    def series(self, wl: Workload, failover: dict[str, Any], active: str, promoted: float | None) -> dict[str, Any]:
        """The picture's data. A commit belongs to the region that was the writer at its ``committed_at``:
        the primary until DR's promotion finished, DR after it (only the writer's ledger takes writes)."""
        since = self.clocks.since
        commits: dict[str, list[float]] = {self.primary: [], self.dr: []}
        for at in self.view.committed_at(active, wl.transfers()).values():
            region = self.dr if promoted is not None and at >= promoted else self.primary
            commits[region].append(since(self.zero, at) or 0.0)
        dns = [[since(self.zero, wall), self.region_of(url)] for wall, url in self.dns_answers]
        times = [t for ts in commits.values() for t in ts] + [0.0]
        lag: dict[str, list[list[float]]] = {}
        try:
            lag = self.view.lag_series(self.clocks, self.zero, time.time())
        except Exception as exc:  # the picture loses a panel; the verdict does not depend on it
            self.notes.append(f"replication lag not read: {exc}")
        return {
            "clock_scale": self.view.scale, "zero_label": self.zero_label,
            "window": [min(min(times), since(self.zero, self.began) or 0.0) - 10, max(times) + 10],
            "commits": {r: sorted(ts) for r, ts in commits.items()},
            "outage": None if self.ended is None else [0.0, failover["outage_seconds"]],
            "dns": dns, "lag": lag,
        }  # fmt: skip

    def producers(self, sent: Sent, count: int, lookups: int) -> dict[str, Any]:
        by_region = {r: sent.accepted_by(self.view.ingress(r)) for r in (self.primary, self.dr)}
        return {"count": count, "accepted_by_region": by_region, "gave_up": len(sent.gave_up),
                "failed_attempts": sent.failed_attempts, "errors": sent.errors[:5], "lookups": lookups,
                "lost_answers": sent.lost_answers, "restamped": sent.restamped}  # fmt: skip

    def region_of(self, url: str) -> str:
        return next((r for r in (self.primary, self.dr) if self.view.ingress(r) == url), url)


def step_end(execution: dict[str, Any] | None, name: str) -> float | None:
    """When the step completed (an attempt that failed before it - the execution was resumed - does not count)."""
    for step in (execution or {}).get("steps", []):
        done = step.get("outcome", "completed") == "completed"
        if step.get("name") == name and done and isinstance(step.get("finished_at"), int | float):
            return float(step["finished_at"])
    return None


def first_ran(failovers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first execution that ran (refusals are records, not executions)."""
    return next((e for e in failovers if e["outcome"] != "refused"), None)


def transaction_id(accepted: Accepted) -> str | None:
    try:
        body = json.loads(accepted.body)
    except ValueError:
        return None
    tid = body.get("transaction_id") if isinstance(body, dict) else None
    return tid if isinstance(tid, str) else None
