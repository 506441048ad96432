"""The drill: a seeded workload through the twin, something done to a region, then an audit from the data.

``tandem drill`` (``make drill``) runs one scenario, or ``all`` of them in turn (:mod:`tandem.drill.kinds`;
``steady`` is the processing path alone, :mod:`tandem.drill.steady`). It starts a twin at the scenario's
clock when none is running - one per scenario for ``all``, so no scenario inherits another's state - and
stops what it started. On a twin that is already running, every scenario runs there and the twin stays up
to be audited from outside; the audit compares before/after snapshots, so earlier work does not count, and
every run's transaction ids are its own (the seed fixes the workload's shape, a per-run salt keeps runs apart).

The package, one concern per module: ``workload`` (what is sent), ``producers`` (clients of the public
name), ``kinds``/``steady`` (what happens; ``scenarios`` the machinery the kinds share), ``observe`` (reading
the twin), ``audit`` (the verdict from the data), ``render`` (report.md and timeline.png), ``progress`` (the
live line), ``queues`` (SQS helpers).

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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg8000.native
from botocore.exceptions import BotoCoreError, ClientError

from tandem.drill.audit import Target
from tandem.drill.kinds import KINDS, SCALES
from tandem.drill.observe import TwinView
from tandem.drill.queues import dead_letter_seconds
from tandem.drill.scenarios import ScenarioOptions
from tandem.drill.steady import run_steady
from tandem.drill.workload import generate
from tandem.twin import launcher
from tandem.twin.control import call, default_state_dir
from tandem.twin.ownership import DRILL_LOCK, FileLock

DRILL_SCALE = 600.0  # the steady scenario: ten emulated minutes per real second (a 190 s visibility timeout in 0.3 s)
SCENARIOS = (*KINDS, "all", "steady")
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
    timeout: float = 600.0  # per scenario
    scenario: str = "steady"
    two_region: ScenarioOptions = field(default_factory=ScenarioOptions)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {self.timeout}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"--scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")

    @property
    def scale(self) -> float:
        return SCALES.get(self.scenario, DRILL_SCALE)


def run(options: DrillOptions, progress: Progress | None = None) -> tuple[dict[str, Any], Path]:
    """Run the drill and write its report (JSON, report.md, timeline.png); DrillError when it could not run."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    report_path = report_destination(options.report, run_id)
    state_dir = options.state_dir or default_state_dir()
    drill_lock = FileLock(state_dir / DRILL_LOCK)
    if not drill_lock.acquire():
        drill_lock.close()
        raise DrillError(f"another drill (pid {drill_lock.holder()}) is running on the twin in {state_dir}")
    drill_lock.record_holder(os.getpid())
    try:
        if options.scenario != "all":
            report = _run_one(options, state_dir, run_id, progress)
        else:
            reports = {name: _run_one(replace(options, scenario=name), state_dir, run_id, progress) for name in KINDS}
            report = {"drill": "twin, two regions", "scenario": "all", "run_id": run_id, "scenarios": reports,
                      "passed": all(r["passed"] for r in reports.values())}  # fmt: skip
    finally:
        drill_lock.close()
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    _write(report_path, report)
    from tandem.drill.render import write_artifacts  # matplotlib: only once there is something to draw

    try:
        write_artifacts(report, report_path)
    except (OSError, ValueError) as exc:  # the JSON stands; say why the pictures are missing
        report["artifacts"] = {"error": f"{type(exc).__name__}: {exc}"}
    _write(report_path, report)
    if not report.get("completed", True) and options.scenario != "all":
        error = report["error"]
        raise DrillError(f"the drill could not run ({error['stage']}): {error['message']}", report_path)
    return report, report_path


def _run_one(options: DrillOptions, state_dir: Path, run_id: str, progress: Progress | None) -> dict[str, Any]:
    """One scenario's report; a scenario that could not run says where it stopped (``completed`` false)."""
    started = time.monotonic()
    # the scenarios of one `all` share its run id (and, on a running twin, the twin): each one's ids are its own
    salt = uuid.uuid5(uuid.UUID(run_id), options.scenario).int
    wl = generate(options.transactions, options.poison, options.duplicates, options.seed, salt=salt)
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
    stage = Phase("starting the twin", progress)
    try:
        with launcher.ensure_running(state_dir, scale=options.scale) as started_twin:
            stage("reading the twin's status")
            status = call(state_dir, "GET", "/status")
            target = Target.primary_of(status)
            scale = float(status["clock"]["scale"])
            report["twin"] = {
                "region": target.region, "started_by_drill": started_twin, "clock_scale": scale,
                "state_dir": str(state_dir), "startup_seconds": status.get("startup_seconds"),
            }  # fmt: skip
            deadline = time.monotonic() + options.timeout
            stage("checking the twin's clock")
            _check_clock(options, target, scale, bool(wl.poison))
            if options.scenario == "steady":
                outcome = run_steady(state_dir, target, scale, wl, bodies, deadline, stage)
            else:
                view = TwinView(state_dir, status)
                if (count_committed := getattr(progress, "count_committed", None)) is not None:
                    count_committed(status["regions"][view.dr]["postgres"])
                scenario = KINDS[options.scenario](view, options.two_region, stage)
                outcome = scenario.run(wl, bodies, deadline)
                report["workload"]["accepted"] = sum(outcome["producers"]["accepted_by_region"].values())
    except (DrillError, *RUN_ERRORS) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.update(passed=False, completed=False, error={"stage": stage.now, "message": message})
        report["wall_seconds"] = round(time.monotonic() - started, 3)
        return report
    report.update(outcome)
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    report["completed"] = True
    report["passed"] = all(outcome["invariants"].values())
    return report


class Phase:
    """Where a scenario is: the stage a failure is reported in, passed on to the live display (if any)."""

    def __init__(self, now: str, display: Progress | None) -> None:
        self.now, self._display = now, display
        self.accepted = getattr(display, "accepted", None)  # the producers' running count, for the display

    def __call__(self, line: str) -> None:
        self.now = line
        if self._display is not None:
            self._display(line)


def _check_clock(options: DrillOptions, target: Target, scale: float, poison: bool) -> None:
    if options.scenario in KINDS and scale > 60:
        raise DrillError(
            f"the running twin's clock is x{scale:g}: too fast for its monitor to keep the heartbeat the failover "
            f"alarm reads; stop it so the drill starts its own at x{options.scale:g}"
        )
    if options.scenario == "blip" and scale > SCALES["blip"]:
        raise DrillError(
            f"the running twin's clock is x{scale:g}: killing and restoring a region takes the twin ~0.8 s, "
            f"{0.8 * scale:.0f} emulated s there - no shorter than the detection window, so not a blip; run the "
            f"blip on a twin at x{SCALES['blip']:g} or slower"
        )
    if poison and (needed := dead_letter_seconds(target, scale)) > options.timeout:
        raise DrillError(
            f"the running twin's clock is x{scale:g}: a poison message needs {needed:.0f} s to reach the DLQ, "
            f"more than the drill's {options.timeout:.0f} s; stop it (`tandem twin down`) so the drill starts "
            f"its own at x{options.scale:g}, or start it with `tandem twin up --scale {options.scale:g}`"
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


def _write(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def summary(report: dict[str, Any], path: Path) -> str:
    """The verdict a person reads at a glance, then the figures, then each invariant."""
    artifacts = report.get("artifacts") or {}
    lines = [f"drill report: {path}"] + [f"  {k}: {v}" for k, v in artifacts.items() if k != "timeline_png"]
    pngs = artifacts.get("timeline_png")
    lines += [f"  timeline: {p}" for p in (pngs if isinstance(pngs, list) else [pngs] if pngs else [])]
    if report.get("scenario") == "all":
        for name, sub in report["scenarios"].items():
            lines.append(f"\n== {name} ==")
            lines += _scenario_lines(sub)
        verdicts = ", ".join(f"{n} {'passed' if s['passed'] else 'FAILED'}" for n, s in report["scenarios"].items())
        lines.append(f"\n{'PASSED' if report['passed'] else 'FAILED'}: {verdicts} ({report['wall_seconds']} s)")
        return "\n".join(lines)
    lines += _scenario_lines(report)
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def _scenario_lines(report: dict[str, Any]) -> list[str]:
    if not report.get("completed", True):
        return [f"could not run ({report['error']['stage']}): {report['error']['message']}", "FAILED"]
    w, r, twin = report["workload"], report["result"], report["twin"]
    lines = [
        f"scenario {report['scenario']}, twin region {twin['region']} (clock x{twin['clock_scale']:g},"
        f" {'started by the drill' if twin['started_by_drill'] else 'already running'}, {report['wall_seconds']} s)",
        f"sent {w['sent']} messages: {w['valid']} valid, {w['poison']} poison, {w['duplicates']} duplicates",
        f"committed {r['committed']}, duplicates applied {r['duplicates_applied']}, rejected to DLQ {r['rejected']},"
        f" lost {r['lost']}",
    ]
    if "failover" in report:
        f = report["failover"]
        lines += [
            f"expected: {f['expected']}",
            f"failover: {f['executions']} execution(s) {f['outcome'] or ''} {f['mode'] or ''},"
            f" {f['refusals']} refusal(s);"
            f" detection {f['detection_seconds']} s, RTO {f['rto_seconds']} s,"
            f" RPO {f['rpo_seconds']} s / {f['rpo_transactions']} transaction(s) (emulated s from the {f['zero']})",
            f"lost before reconciliation {r['lost_before_reconcile']}, after {r['lost_after_reconcile']};"
            f" accepted per region {report['producers']['accepted_by_region']}",
        ]
    else:
        lines.append(f"processing: {report['processing']['invocations']} invocations")
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in report["invariants"].items()]
    return lines
