"""On a twin that is already running, a scenario runs there and leaves it running, to be audited from outside.

The first switchover writes its own report page and picture (a poison message reaching the DLQ in it). A
second switchover finds DR active since the first: the drill fails back first, as an operator would (once
the primary caught up), and says so. A blip is refused in one line on a clock too fast for an outage to be
shorter than detection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.drill.kinds import SCALES
from tandem.twin import launcher
from tandem.twin.control import call
from tests.conftest import ROOT
from tests.drill.test_scenarios import PNG_SIGNATURE


@pytest.fixture(scope="module")
def running_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("running-twin") / "twin"
    # the minimum delay between executions passes in real seconds on the twin: 5 s lets two scenarios follow
    launcher.start(state_dir, scale=SCALES["switchover"], parameter_overrides={"FailoverMinDelaySeconds": "5"})
    try:
        yield state_dir
    finally:
        launcher.stop(state_dir)


def _drill(state_dir: Path, report: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(state_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", *args, "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    return proc, json.loads(report.read_text()) if report.exists() else {}


def test_a_second_switchover_fails_back_first_and_the_twin_stays_up(running_twin: Path, tmp_path: Path) -> None:
    workload = ("--scenario", "switchover", "--transactions", "10", "--duplicates", "1")
    first, one = _drill(running_twin, tmp_path / "first.json", *workload, "--poison", "1")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert first.stdout.rstrip().endswith("PASSED")
    assert one["twin"]["started_by_drill"] is False
    assert one["notes"] == []
    assert one["result"]["rejected"] == 1  # the poison message reached the DLQ
    assert one["invariants"]["rejected_equals_poison"] is True
    page = Path(one["artifacts"]["markdown"]).read_text(encoding="utf-8")  # a single scenario's own page
    assert "PASSED" in page
    assert "one_completed_switchover" in page
    assert Path(one["artifacts"]["timeline_png"]).read_bytes()[:8] == PNG_SIGNATURE
    second, two = _drill(running_twin, tmp_path / "second.json", *workload, "--poison", "0", "--seed", "2")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    (note,) = two["notes"]
    assert note.startswith("failed back to us-east-1 before the scenario")
    assert two["failover"]["executions"] == 1  # the failback before the scenario is not the scenario's
    assert launcher.is_running(running_twin)
    status = call(running_twin, "GET", "/status")
    assert {r: i["up"] for r, i in status["regions"].items()} == {"us-east-1": True, "us-west-2": True}


def test_a_blip_on_a_clock_too_fast_for_one_is_refused_in_one_line(running_twin: Path, tmp_path: Path) -> None:
    proc, report = _drill(running_twin, tmp_path / "blip.json", "--scenario", "blip", "--transactions", "5")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "x60" in line
    assert "not a blip" in line
    assert report["completed"] is False
    assert report["error"]["stage"] == "checking the twin's clock"
