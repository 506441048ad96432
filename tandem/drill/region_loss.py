"""The region-loss scenario: producers keep sending through the public name while the primary region dies.

Nobody calls the failover handler. The drill kills the primary (API, ingress, database) when a fraction of the
workload has been sent and brings it back ``outage_for`` emulated seconds later; detection, the decision, the
failover, DNS, forwarding and reconciliation happen by themselves. Then it waits for the system to settle (one
completed failover, the old region back, reconciliation done, every queue empty) and audits the active
region's data against what producers were told was accepted.

Measured from the data, never assumed (seconds in emulated AWS time = real seconds x the clock scale):
- detection: outage start -> the failover execution's start (the alarm's decision);
- RTO: outage start -> the first transaction accepted after the outage began committed by DR (its status
  item's ``recorded_at``);
- RPO: what DR's ledger lacked at promotion - the transactions reconciliation had to re-apply, and the time
  from the oldest of them being accepted to the promotion.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tandem.audit import Target, audit, snapshot
from tandem.drill.producers import Accepted, Producers, Resolver, Sent
from tandem.local import emulator_client
from tandem.twin.control import call
from tandem.workload import Workload

RECORD = "txn.tandem.twin.internal"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RegionLossOptions:
    outage_at: float = 0.3  # fraction of the workload sent when the primary dies
    outage_for: float = 300.0  # emulated seconds until it returns
    producers: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.outage_at <= 1.0:
            raise ValueError(f"--outage-at is a fraction of the workload, 0 to 1, not {self.outage_at}")
        if self.outage_for <= 0:
            raise ValueError(f"--outage-for must be > 0 emulated seconds, not {self.outage_for}")
        if self.producers < 1:
            raise ValueError(f"--producers must be at least 1, not {self.producers}")


@dataclass
class Outage:
    """When the primary died and came back (epoch and monotonic seconds, real)."""

    started_wall: float | None = None
    started: float | None = None
    ended_wall: float | None = None
    restored: threading.Event = field(default_factory=threading.Event)


class RegionLoss:
    def __init__(self, state_dir: Path, status: dict[str, Any], options: RegionLossOptions,
                 progress: Progress | None = None) -> None:  # fmt: skip
        self.state_dir, self.status, self.options = state_dir, status, options
        self.scale = float(status["clock"]["scale"])
        roles = {info["role"]: region for region, info in status["regions"].items()}
        self.primary, self.dr = roles["primary"], roles["dr"]
        self.progress = progress or (lambda _line: None)
        self.outage = Outage()
        self.began_wall = time.time()

    # ------------------------------------------------------------------------------------------ the run
    def run(self, wl: Workload, bodies: list[str], deadline: float) -> dict[str, Any]:
        self._preflight(deadline)
        self.began_wall = time.time()  # a failover from here on before the outage would be a spurious one
        before = snapshot(self._target(self.primary))
        cut = round(self.options.outage_at * len(bodies))
        sent = self._produce(bodies, cut, deadline)
        self.progress(
            f"sent: {len(sent.accepted)} accepted, {len(sent.gave_up)} given up; waiting for the outage to end"
        )
        if self.outage.started is None:  # an empty workload: the outage still happens
            self._kill()
        self.outage.restored.wait(max(0.0, deadline - time.monotonic()))
        execution = self._wait(self._failover_done, deadline, "the failover to complete")
        reconciled = self._wait(self._reconciled, deadline, "reconciliation after the outage")
        self._wait(self._queues_empty, deadline, "every queue to drain")
        target = self._target(self.dr)
        dlq = self._take_dlqs()
        outcome = audit(target, wl, before, dlq)
        failover = self._failover_report(execution, reconciled, sent)
        outcome["invariants"]["every_message_accepted"] = not sent.gave_up
        outcome["invariants"]["one_completed_failover"] = (failover["executions"], failover["outcome"]) == (
            1, "completed",
        )  # fmt: skip
        outcome["invariants"]["nothing_lost_after_reconcile"] = outcome["result"]["lost"] == 0
        outcome["result"].update(
            lost_before_reconcile=failover.pop("lost_before_reconcile"),
            lost_after_reconcile=outcome["result"]["lost"],
            reconciled=failover["rpo_transactions"],
        )  # fmt: skip
        return {**outcome, "failover": failover, "producers": self._producers_report(sent)}

    # ------------------------------------------------------------------------------------------ steps
    def _preflight(self, deadline: float) -> None:
        """DR ready and the alarm armed (it must come from OK: the bootstrap guard), automatic failover on."""
        active = self._handler({"action": "status"})["control"]["active_region"]
        if active != self.primary:
            raise RuntimeError(
                f"{active} is active on this twin since an earlier run: fail back first (tandem failback)"
            )
        rule = f"{self.status['regions'][self.dr]['resources']['stack']}-peer-region-impaired"
        if self._client(self.dr, "events").describe_rule(Name=rule)["State"] != "ENABLED":
            raise RuntimeError(
                f"automatic failover is off in {self.dr} (rule {rule} disabled): nothing would fail over"
            )
        self._wait(lambda: self._readiness(self.dr) == "ready", deadline, f"{self.dr} to be ready")
        self._wait(lambda: self._alarm_state() == "OK", deadline, "the peer-region-impaired alarm to be OK")

    def _produce(self, bodies: list[str], cut: int, deadline: float) -> Sent:
        info = self.status["regions"]
        hosts = {i["resources"]["ingress_domain"]: i["ingress"] for i in info.values()}
        resolver = Resolver(
            self._client(self.dr, "route53"), self.status["hosted_zone"], RECORD, hosts, ttl_seconds=60 / self.scale
        )
        killed = threading.Lock()

        def pace(n: int) -> None:
            if n >= cut and self.outage.started is None:
                with killed:
                    if self.outage.started is None:
                        self._kill()

        return Producers(resolver, self.options.producers).send(bodies, deadline, pace)

    def _kill(self) -> None:
        self.outage.started_wall, self.outage.started = time.time(), time.monotonic()
        call(self.state_dir, "POST", f"/outage/{self.primary}")
        self.progress(f"{self.primary} is down (for {self.options.outage_for:g} emulated s)")
        timer = threading.Timer(self.options.outage_for / self.scale, self._restore)
        timer.daemon = True
        timer.start()

    def _restore(self) -> None:
        call(self.state_dir, "POST", f"/restore/{self.primary}")
        self.outage.ended_wall = time.time()
        self.progress(f"{self.primary} is back")
        self.outage.restored.set()

    # ------------------------------------------------------------------------------------------ reading
    def _client(self, region: str, service: str) -> Any:
        return emulator_client(service, region, self.status["regions"][region]["endpoint"])

    def _target(self, region: str) -> Target:
        info = self.status["regions"][region]
        res = info["resources"]
        return Target(region, info["endpoint"], info["postgres"], res["queue_url"], res["dlq_url"],
                      res["ledger_table"], res["archive_bucket"])  # fmt: skip

    def _handler(self, request: dict[str, Any]) -> dict[str, Any]:
        name = f"{self.status['regions'][self.dr]['resources']['stack']}-failover-handler"
        reply = self._client(self.dr, "lambda").invoke(FunctionName=name, Payload=json.dumps(request).encode())
        answer: dict[str, Any] = json.loads(reply["Payload"].read())
        if reply.get("FunctionError"):
            raise RuntimeError(f"{name}: {answer.get('errorMessage')}")
        return answer

    def _readiness(self, region: str) -> str | None:
        from tandem_core.readiness import read_readiness

        table = self.status["regions"][region]["resources"]["ledger_table"]
        return (read_readiness(self._client(region, "dynamodb"), table, region) or {}).get("verdict")

    def _alarm_state(self) -> str:
        name = f"{self.status['regions'][self.dr]['resources']['stack']}-peer-region-impaired"
        found = self._client(self.dr, "cloudwatch").describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])
        return str(found["CompositeAlarms"][0]["StateValue"]) if found["CompositeAlarms"] else "missing"

    def _executions(self) -> list[dict[str, Any]]:
        return list(self._handler({"action": "status"})["executions"])

    def _failover_done(self) -> dict[str, Any] | None:
        started = self.outage.started_wall or 0.0
        done = [e for e in self._executions() if e["action"] == "failover" and e["started_at"] >= started]
        return next((e for e in done if e["outcome"] == "completed"), None)

    def _reconciled(self) -> dict[str, Any] | None:
        if not self.outage.restored.is_set():
            return None
        started = self.outage.started_wall or 0.0
        done = [e for e in self._executions() if e["action"] == "reconcile" and e["started_at"] >= started]
        return next((e for e in done if e["outcome"] == "completed"), None)

    def _queues_empty(self) -> bool:
        for region in (self.primary, self.dr):
            url = self.status["regions"][region]["resources"]["queue_url"]
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            attrs = self._client(region, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
            if any(int(attrs[n]) for n in names):
                return False
        return True

    def _take_dlqs(self) -> list[str]:
        from tandem.drill import take_dlq

        return [body for region in (self.primary, self.dr) for body in take_dlq(self._target(region))]

    def _wait(self, check: Callable[[], Any], deadline: float, what: str) -> Any:
        note = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            if time.monotonic() >= note:
                self.progress(f"waiting for {what}")
                note = time.monotonic() + 5.0
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

    # ------------------------------------------------------------------------------------------ report
    def _failover_report(
        self, execution: dict[str, Any] | None, reconciled: dict[str, Any] | None, sent: Sent
    ) -> dict[str, Any]:
        outage_at = self.outage.started_wall or 0.0
        emulated = self.scale
        report = reconciled.get("report", {}) if reconciled else {}
        reapplied = set(report.get("journal", {}).get("reapplied_ids", []))
        promoted = _step_end(execution, "promote_database")
        accepted_at = {json.loads(a.body).get("transaction_id"): a.wall_at for a in sent.accepted if _is_json(a)}
        lost_times = [accepted_at[t] for t in reapplied if t in accepted_at]
        rto = self._rto(sent, outage_at)
        return {
            "clock_scale": self.scale,
            "executions": len(
                [  # what ran; refusals (recorded when a human must know) are not executions
                    e
                    for e in self._executions()
                    if e["action"] == "failover" and e["started_at"] >= self.began_wall and e["outcome"] != "refused"
                ]
            ),
            "outcome": None if execution is None else execution["outcome"],
            "mode": None if execution is None else execution["mode"],
            "detection_seconds": None
            if execution is None
            else round((execution["started_at"] - outage_at) * emulated, 1),
            "rto_seconds": None if rto is None else round(rto * emulated, 1),
            "rpo_seconds": round((promoted - min(lost_times)) * emulated, 1) if lost_times and promoted else 0.0,
            "rpo_transactions": len(reapplied),
            "rpo_estimate_seconds": None if execution is None else execution.get("rpo_estimate_seconds"),
            "lost_before_reconcile": len(reapplied),
            "timeline": self._timeline(execution, reconciled),
            "reconcile": report,
        }

    def _rto(self, sent: Sent, outage_at: float) -> float | None:
        """Outage start -> the first commit by DR of a transaction accepted after the outage began (real s)."""
        from tandem_core.status import StatusStore

        table = self.status["regions"][self.dr]["resources"]["ledger_table"]
        statuses = StatusStore(self._client(self.dr, "dynamodb"), table)
        commits = []
        for accepted in sent.accepted:
            if accepted.wall_at < outage_at or not _is_json(accepted):
                continue
            tid = json.loads(accepted.body).get("transaction_id")
            item = statuses.get(str(tid)) if tid else None
            if item and item.get("region", {}).get("S") == self.dr:
                commits.append(datetime.fromisoformat(item["recorded_at"]["S"]).timestamp())
        return min(commits) - outage_at if commits else None

    def _timeline(self, execution: dict[str, Any] | None, reconciled: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Every event in emulated seconds from the outage's start."""
        start = self.outage.started_wall or 0.0

        def at(epoch: float | None) -> float | None:
            return None if epoch is None else round((epoch - start) * self.scale, 1)

        events: list[dict[str, Any]] = [
            {"event": f"{self.primary} down", "at": 0.0},
            {"event": f"{self.primary} back", "at": at(self.outage.ended_wall)},
        ]
        for record in (execution, reconciled):
            if record is None:
                continue
            for step in record.get("steps", []):
                events.append({"event": f"{record['action']}: {step['name']} {step['outcome']}",
                               "at": at(step.get("finished_at")), "started": at(step.get("started_at"))})  # fmt: skip
        return sorted(events, key=lambda e: (e["at"] is None, e["at"] or 0.0))

    def _producers_report(self, sent: Sent) -> dict[str, Any]:
        by_region = {r: sent.accepted_by(self.status["regions"][r]["ingress"]) for r in (self.primary, self.dr)}
        return {"count": self.options.producers, "accepted_by_region": by_region, "gave_up": len(sent.gave_up),
                "failed_attempts": sent.failed_attempts}  # fmt: skip


def _step_end(execution: dict[str, Any] | None, name: str) -> float | None:
    for step in (execution or {}).get("steps", []):
        if step.get("name") == name and isinstance(step.get("finished_at"), int | float):
            return float(step["finished_at"])
    return None


def _is_json(accepted: Accepted) -> bool:
    try:
        return isinstance(json.loads(accepted.body), dict)
    except ValueError:
        return False
