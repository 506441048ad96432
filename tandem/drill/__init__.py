"""The drill: a seeded workload through the twin's primary region, consumed as Lambda would, then audited.

The twin's event source mapping (its SQS poller) hands batches to the unmodified handler; SQS's redrive
moves poison to the DLQ after maxReceiveCount receives. The drill only produces, waits until the queue is
empty, and has :mod:`tandem.audit` read the data through the same endpoints and database URI that
`tandem twin status --json` prints; the number of invocations is CloudWatch's, over the drill's window
of twin time. It starts the twin (on a compressed clock, so retries after the visibility timeout take a
fraction of a second) when none is running, and stops what it started. On a twin that is already running, the audit
compares before/after snapshots, so earlier work in the twin does not count, and every run's transaction
ids are its own (the seed fixes the workload's shape; a per-run salt keeps two runs of one seed apart).

Two ways to end without PASSED, told apart by exit code: the audit found a problem (exit 1, full report)
or the drill could not run (:class:`DrillError`, exit 2, one line and whatever partial report exists).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg8000.native
from botocore.exceptions import BotoCoreError, ClientError

from tandem.audit import Target, audit, processor_invocations, snapshot
from tandem.drill.region_loss import RegionLoss, RegionLossOptions
from tandem.twin import launcher
from tandem.twin.control import call, default_state_dir
from tandem.twin.ownership import DRILL_LOCK, FileLock
from tandem.workload import generate

DRILL_SCALE = 600.0  # ten emulated minutes per real second: a 190 s visibility timeout passes in 0.3 s
#: the region-loss drill's clock: the monitor must keep its heartbeat within the scaled alarm threshold (at
#: x600 it cannot, and the alarm would fire on its own). x30 keeps it on this 2-core machine under the drill's
#: load (no failover before the outage, counted by the drill) and lets poison reach the DLQ in ~32 s
REGION_LOSS_SCALE = 30.0
SCENARIOS = ("region-loss", "steady")
MAX_IN_FLIGHT = 50  # producer back-pressure: keep the queue short, as a consumer that keeps up does
PROGRESS_EVERY = 5.0  # real seconds between progress lines while waiting
#: What can break a drill from outside its audit: an emulator or database gone (an outage), a twin gone.
RUN_ERRORS = (BotoCoreError, ClientError, pg8000.native.Error, OSError, RuntimeError, TimeoutError)

Progress = Callable[[str], None]


class DrillError(RuntimeError):
    """The drill could not run to its audit; ``report_path`` holds the partial report, when one was written."""

    def __init__(self, message: str, report_path: Path | None = None) -> None:
        super().__init__(message + (f"; partial report: {report_path}" if report_path else ""))
        self.report_path = report_path


@dataclass(frozen=True)
class DrillOptions:
    transactions: int = 200
    poison: int = 5
    duplicates: int = 20
    seed: int = 1
    report: Path | None = None
    state_dir: Path | None = None
    timeout: float = 600.0
    scenario: str = "steady"
    region_loss: RegionLossOptions = field(default_factory=RegionLossOptions)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {self.timeout}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"--scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")

    @property
    def scale(self) -> float:
        return REGION_LOSS_SCALE if self.scenario == "region-loss" else DRILL_SCALE


def twin_clock(state_dir: Path) -> float:
    """The twin's emulated time (epoch seconds), the clock its metrics are stamped with."""
    return float(call(state_dir, "GET", "/status")["clock"]["now"])


def window_start(state_dir: Path, scale: float) -> int:
    """The next whole emulated second, once the twin's clock has passed it (CloudWatch counts whole seconds)."""
    now = twin_clock(state_dir)
    time.sleep((math.floor(now) + 1 - now) / scale)
    return math.floor(now) + 1


def produce(target: Target, bodies: list[str], deadline: float) -> None:
    """Send every body in batches of 10, never letting more than MAX_IN_FLIGHT wait in the queue."""
    sqs = target.client("sqs")
    for i in range(0, len(bodies), 10):
        while _queue_depth(sqs, target.queue_url)[0] > MAX_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise TimeoutError("the twin is not consuming the queue (is the event source mapping enabled?)")
            time.sleep(0.02)
        resp = sqs.send_message_batch(
            QueueUrl=target.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {resp['Failed']}")


def wait_drained(target: Target, deadline: float, progress: Progress | None = None) -> None:
    """Wait until nothing is waiting or in flight; say how it goes every few seconds (retries can be slow)."""
    sqs, empty_checks, next_note = target.client("sqs"), 0, time.monotonic() + PROGRESS_EVERY
    while time.monotonic() < deadline:
        visible, in_flight = _queue_depth(sqs, target.queue_url)
        empty_checks = empty_checks + 1 if visible + in_flight == 0 else 0
        if empty_checks >= 3:
            return
        if progress is not None and time.monotonic() >= next_note:
            progress(f"waiting for the queue to drain: {visible} waiting, {in_flight} in flight (retries)")
            next_note = time.monotonic() + PROGRESS_EVERY
        time.sleep(0.05)
    raise TimeoutError("the queue was not drained in time")


def _queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def dead_letter_seconds(target: Target, clock_scale: float) -> float:
    """Real seconds a poison message needs to reach the DLQ on this twin: maxReceiveCount visibility timeouts."""
    attrs = target.client("sqs").get_queue_attributes(
        QueueUrl=target.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
    )["Attributes"]
    receives = int(json.loads(attrs.get("RedrivePolicy", "{}")).get("maxReceiveCount", 1))
    return receives * int(attrs["VisibilityTimeout"]) / clock_scale


def take_dlq(target: Target) -> list[str]:
    """Receive and delete everything in the DLQ (what a drill leaves there is its own poison)."""
    sqs = target.client("sqs")
    bodies: list[str] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=target.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            return bodies
        bodies += [m["Body"] for m in msgs]
        sqs.delete_message_batch(
            QueueUrl=target.dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


def report_destination(requested: Path | None, run_id: str) -> Path:
    """Where the report goes, checked writable *before* the drill runs (a result is never lost at the end).

    Default names carry the time and the run id, so two drills never write the same file.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = requested or Path("reports") / f"drill-{stamp}-{run_id[:8]}.json"
    if path.is_dir():
        raise DrillError(f"--report {path} is a directory; give a file path")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise DrillError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink()
    return path


def run(options: DrillOptions, progress: Progress | None = None) -> tuple[dict[str, Any], Path]:
    """Run the drill and write its report; DrillError when it could not run (with a partial report)."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    wl = generate(options.transactions, options.poison, options.duplicates, options.seed, salt=int(run_id, 16))
    report_path = report_destination(options.report, run_id)
    state_dir = options.state_dir or default_state_dir()
    drill_lock = FileLock(state_dir / DRILL_LOCK)
    if not drill_lock.acquire():
        drill_lock.close()
        raise DrillError(f"another drill (pid {drill_lock.holder()}) is running on the twin in {state_dir}")
    drill_lock.record_holder(os.getpid())
    bodies = wl.messages(random.Random(options.seed + 1))
    report: dict[str, Any] = {
        "drill": "twin, primary region" if options.scenario == "steady" else "twin, two regions",
        "scenario": options.scenario,
        "run_id": run_id,
        "options": {
            "transactions": options.transactions, "poison": options.poison, "duplicates": options.duplicates,
            "seed": options.seed,
        },
        "workload": {
            "sent": len(bodies), "valid": len(wl.valid), "poison": len(wl.poison), "duplicates": len(wl.duplicates),
        },
    }  # fmt: skip
    stage = "starting the twin"
    try:
        with launcher.ensure_running(state_dir, scale=options.scale) as started_twin:
            stage = "reading the twin's status"
            status = call(state_dir, "GET", "/status")
            target = Target.primary_of(status)
            scale = float(status["clock"]["scale"])
            report["twin"] = {
                "region": target.region, "started_by_drill": started_twin, "clock_scale": scale,
                "state_dir": str(state_dir), "startup_seconds": status.get("startup_seconds"),
            }  # fmt: skip
            deadline = time.monotonic() + options.timeout
            stage = "checking the twin's clock"
            if options.scenario == "region-loss" and scale > 60:
                raise DrillError(
                    f"the running twin's clock is x{scale:g}: too fast for its monitor to keep the heartbeat the "
                    f"failover alarm reads; stop it so the drill starts its own at x{REGION_LOSS_SCALE:g}"
                )
            if wl.poison:
                needed = dead_letter_seconds(target, scale)
                if needed > options.timeout:
                    raise DrillError(
                        f"the running twin's clock is x{scale:g}: a poison message needs {needed:.0f} s to reach "
                        f"the DLQ, more than the drill's {options.timeout:.0f} s; stop it (`tandem twin down`) so "
                        f"the drill starts its own at x{options.scale:g}, or start it with "
                        f"`tandem twin up --scale {options.scale:g}`"
                    )
            if options.scenario == "region-loss":
                stage = "the region-loss scenario"
                scenario = RegionLoss(state_dir, status, options.region_loss, progress)
                outcome = scenario.run(wl, bodies, deadline)
                leftover_dlq, invocations = [], None
            if options.scenario == "steady":
                stage = "taking what earlier runs left in the DLQ"
                leftover_dlq = take_dlq(target)
                before = snapshot(target)
                since = window_start(state_dir, scale)
                stage = "sending the workload"
                produce(target, bodies, deadline)
                stage = "waiting for the queue to drain"
                wait_drained(target, deadline, progress)
                until = math.floor(twin_clock(state_dir)) + 1
                stage = "auditing"
                dlq = take_dlq(target)
                outcome = audit(target, wl, before, dlq)
                stage = "counting invocations"
                invocations = processor_invocations(target, since, until, deadline, progress)
    except (DrillError, *RUN_ERRORS) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.update(passed=False, completed=False, error={"stage": stage, "message": message})
        report["wall_seconds"] = round(time.monotonic() - started, 3)
        _write(report_path, report)
        raise DrillError(f"the drill could not run ({stage}): {message}", report_path) from None
    finally:
        drill_lock.close()
    report.update(outcome)
    report["processing"] = {"invocations": invocations, "dlq_left_from_earlier": len(leftover_dlq)}
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    report["completed"] = True
    report["passed"] = all(outcome["invariants"].values())
    _write(report_path, report)
    return report, report_path


def _write(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def summary(report: dict[str, Any], path: Path) -> str:
    w, r, twin = report["workload"], report["result"], report["twin"]
    lines = [
        f"drill report: {path}",
        f"scenario {report.get('scenario', 'steady')}, twin region {twin['region']} (clock x{twin['clock_scale']:g},"
        f" {'started by the drill' if twin['started_by_drill'] else 'already running'})",
        f"sent {w['sent']} messages: {w['valid']} valid, {w['poison']} poison, {w['duplicates']} duplicates",
        f"committed {r['committed']}, duplicates applied {r['duplicates_applied']}, rejected to DLQ {r['rejected']},"
        f" lost {r['lost']}  ({report.get('processing', {}).get('invocations')} invocations,"
        f" {report['wall_seconds']} s)",
    ]
    if "failover" in report:
        f = report["failover"]
        lines += [
            f"failover: {f['executions']} execution(s), {f['outcome']} ({f['mode']});"
            f" detection {f['detection_seconds']} s, RTO {f['rto_seconds']} s,"
            f" RPO {f['rpo_seconds']} s / {f['rpo_transactions']} transaction(s)"
            f" (emulated seconds, clock x{f['clock_scale']:g})",
            f"lost before reconciliation {r['lost_before_reconcile']}, after {r['lost_after_reconcile']};"
            f" producers: {report['producers']['accepted_by_region']} accepted per region",
        ]
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in report["invariants"].items()]
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
