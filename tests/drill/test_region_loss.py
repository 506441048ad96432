"""`make drill`'s default scenario, as a user runs it: the primary region dies mid-stream and nobody calls anything.

The drill starts its own twin (x30), four producers send through the public name, the primary dies a third of
the way in and returns two emulated minutes later. The report must say what happened, from the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tandem.twin import launcher
from tests.conftest import ROOT


def test_the_region_loss_drill_fails_over_by_itself_and_loses_nothing_it_accepted(tmp_path: Path) -> None:
    report_path, state_dir = tmp_path / "region-loss.json", tmp_path / "twin"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(state_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--transactions", "40", "--poison", "0", "--duplicates", "4",
         "--outage-at", "0.3", "--outage-for", "120", "--seed", "5", "--report", str(report_path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["scenario"] == "region-loss"
    assert report["workload"] == {"sent": 44, "valid": 40, "poison": 0, "duplicates": 4}
    result, failover = report["result"], report["failover"]
    assert (result["committed"], result["duplicates_applied"], result["lost_after_reconcile"]) == (40, 0, 0)
    assert all(report["invariants"].values()), report["invariants"]
    assert (failover["executions"], failover["outcome"], failover["mode"]) == (1, "completed", "failover")
    assert failover["clock_scale"] == 30
    # detection is bounded below by the alarms' windows (heartbeat 40 s, health 4 of 5 ten-second periods)
    assert 30 <= failover["detection_seconds"] <= failover["rto_seconds"]
    assert failover["rpo_transactions"] == result["lost_before_reconcile"] == result["reconciled"]
    names = [event["event"] for event in failover["timeline"]]
    assert names[0] == "us-east-1 down"
    assert "failover: promote_database completed" in names
    assert any(name.startswith("reconcile: journal") for name in names)
    assert report["producers"]["accepted_by_region"]["us-west-2"] > 0  # producers followed DNS
    assert report["twin"]["started_by_drill"] is True
    assert not launcher.is_running(state_dir)
