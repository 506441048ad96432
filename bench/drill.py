"""`make drill`'s wall time: the default region-loss drill, once, on a twin of its own (as a user runs it).

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

TARGET_SECONDS = 60.0


@dataclass(frozen=True)
class DrillRun:
    wall: float
    startup: float
    outage: float
    passed: bool
    detection: float | None
    rto: float | None

    @property
    def floor(self) -> float:
        return self.startup + self.outage


def measure() -> DrillRun:
    from tandem.drill import DrillOptions, run

    with tempfile.TemporaryDirectory(prefix="tandem-bench-drill-") as d:
        options = DrillOptions(scenario="region-loss", state_dir=Path(d) / "twin", report=Path(d) / "report.json")
        report, _ = run(options)
    failover = report["failover"]
    return DrillRun(
        wall=float(report["wall_seconds"]), startup=float(report["twin"].get("startup_seconds") or 0.0),
        outage=options.region_loss.outage_for / float(failover["clock_scale"]), passed=bool(report["passed"]),
        detection=failover["detection_seconds"], rto=failover["rto_seconds"],
    )  # fmt: skip


def report(run: DrillRun) -> tuple[dict[str, float], list[str]]:
    lines = [
        f"  drill      : {run.wall:.1f} s wall, {'PASSED' if run.passed else 'FAILED'} (default workload and outage)",
        f"  floor      : {run.floor:.1f} s = twin start {run.startup:.1f} s + the outage {run.outage:.1f} s",
        f"  measured   : detection {run.detection} s, RTO {run.rto} s (emulated)",
        f"  wall time  : {verdict(run.wall, TARGET_SECONDS, higher_is_better=False)}",
        f"  ratio      : {run.wall / run.floor:.2f}  (drill / its floor)",
    ]
    return {"drill_region_loss_seconds": run.wall, "drill_vs_its_floor": run.wall / run.floor}, lines
