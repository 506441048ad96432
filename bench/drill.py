"""`make drill`'s wall time: the default region-loss drill, once, on a twin of its own (as a user runs it);
and ``drill_all_seconds``, `make drill ARGS="--scenario all"` (target < 180 s).

``drill_region_loss_seconds`` is the whole run - twin start to report - with the default workload and outage;
target < 60 s on this 2-core machine. Beside it the parts no code of ours can shorten, measured in the same
run: the outage itself (``--outage-for`` on the twin's clock) and the twin's start-up; their sum is the floor
the ratio ``drill_vs_its_floor`` divides by.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.stats import verdict

TARGETS = {"region-loss": 60.0, "all": 180.0}  # seconds wall, on this 2-core machine


@dataclass(frozen=True)
class DrillRun:
    wall: float
    startup: float
    outage: float
    passed: bool
    detection: float | None
    rto: float | None
    scenario: str = "region-loss"

    @property
    def floor(self) -> float:
        return self.startup + self.outage


def measure(scenario: str = "region-loss") -> DrillRun:
    """One default drill (``all``: the ten scenarios in turn, each on a twin of its own), as `make drill` runs it."""
    from tandem.drill import DrillOptions, run

    with tempfile.TemporaryDirectory(prefix="tandem-bench-drill-") as d:
        options = DrillOptions(scenario=scenario, state_dir=Path(d) / "twin", report=Path(d) / "report.json")
        report, _ = run(options)
    runs = list(report["scenarios"].values()) if scenario == "all" else [report]
    startup = sum(float(r["twin"].get("startup_seconds") or 0.0) for r in runs)
    outage = sum(float(r["failover"]["outage_seconds"] or 0.0) / float(r["failover"]["clock_scale"]) for r in runs)
    first = runs[0]["failover"]
    return DrillRun(
        wall=float(report["wall_seconds"]), startup=startup, outage=outage, passed=bool(report["passed"]),
        detection=first["detection_seconds"], rto=first["rto_seconds"], scenario=scenario,
    )  # fmt: skip


def report(run: DrillRun) -> tuple[dict[str, float], list[str]]:
    target = TARGETS[run.scenario]
    name = run.scenario.replace("-", "_")
    lines = [
        f"  drill      : {run.wall:.1f} s wall, {'PASSED' if run.passed else 'FAILED'} (default workload and outage)",
        f"  floor      : {run.floor:.1f} s = twin start(s) {run.startup:.1f} s + the outage(s) {run.outage:.1f} s",
        f"  measured   : detection {run.detection} s, RTO {run.rto} s (emulated; region-loss)",
        f"  wall time  : {verdict(run.wall, target, higher_is_better=False)}",
        f"  ratio      : {run.wall / run.floor:.2f}  (drill / its floor)",
    ]
    suffix = "" if run.scenario == "region-loss" else f"_{name}"
    return {f"drill_{name}_seconds": run.wall, f"drill_vs_its_floor{suffix}": run.wall / run.floor}, lines
