"""`tandem status` on the running twin, as an operator runs it: a subprocess, the state dir in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tandem.twin.control import call
from tests.conftest import ROOT

PRIMARY, DR = "us-east-1", "us-west-2"
VERDICTS = {"ready", "degraded", "not_ready"}


def _status(twin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANDEM_TWIN_DIR": str(twin_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", "status", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _json(twin_dir: Path) -> dict[str, Any]:
    proc = _status(twin_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    shown: dict[str, Any] = json.loads(proc.stdout)  # exactly one object, nothing else on stdout
    return shown


def _readiness_shape(region: dict[str, Any]) -> None:
    """The monitor's record when it has run, else ``unknown`` with its reason - never an invented verdict."""
    readiness, peer = region["readiness"], region["peer"]
    assert set(readiness["lag_seconds"]) == {"aurora", "dynamodb", "s3"}
    assert all(v is None or isinstance(v, float) for v in readiness["lag_seconds"].values())
    assert set(peer) >= {"healthy", "heartbeat_age_seconds"}
    if readiness["verdict"] == "unknown":
        assert readiness["reasons"] == ["no_readiness_record"]
        assert readiness["measured_at"] is None
        assert peer["healthy"] is None
        return
    assert readiness["verdict"] in VERDICTS
    assert all(isinstance(r, str) for r in readiness["reasons"])
    assert readiness["measured_at"].endswith("Z")
    assert readiness["age_seconds"] >= 0
    assert peer["healthy"] in (True, False, None)
    assert peer["heartbeat_age_seconds"] is None or peer["heartbeat_age_seconds"] >= 0


def test_status_shows_both_regions_of_the_twin(twin: dict[str, Any], twin_dir: Path) -> None:
    shown = _json(twin_dir)

    assert shown["target"] == "twin"
    assert list(shown["regions"]) == [PRIMARY, DR]
    primary, dr = shown["regions"][PRIMARY], shown["regions"][DR]
    assert (primary["role"], dr["role"]) == ("primary", "dr")
    assert primary["reachable"] is dr["reachable"] is True
    assert (primary["writer"], dr["writer"]) == (True, False)
    assert (primary["processing"], dr["processing"]) == (True, False)
    assert shown["global_cluster"]["writer_region"] == PRIMARY == twin["writer_region"]
    assert shown["global_cluster"]["id"] == twin["global_cluster"]
    for region in (PRIMARY, DR):
        info = shown["regions"][region]
        assert info["errors"] == []
        assert info["resources"]["cluster"] == twin["regions"][region]["cluster"]
        processor = twin["regions"][region]["functions"]["transaction_processor"]
        # the mapping invokes the alias "live" of the deployed function (SnapStart runs published versions)
        assert info["resources"]["processor_function"] == processor["alias"]
        assert processor["alias"].endswith(f":function:{processor['name']}:live")
        _readiness_shape(info)

    human = _status(twin_dir)
    assert human.returncode == 0, human.stderr
    assert f"{PRIMARY}  primary" in human.stdout
    assert f"{DR}  dr" in human.stdout


def test_a_region_in_outage_is_unreachable_and_the_command_still_answers(twin: dict[str, Any], twin_dir: Path) -> None:
    call(twin_dir, "POST", f"/outage/{DR}")
    try:
        shown = _json(twin_dir)
        human = _status(twin_dir)
    finally:
        call(twin_dir, "POST", f"/restore/{DR}")

    dr, primary = shown["regions"][DR], shown["regions"][PRIMARY]
    assert dr["reachable"] is False
    assert "Could not connect" in dr["error"]
    assert "\n" not in dr["error"]
    assert dr["processing"] is None
    assert dr["readiness"]["verdict"] == "unknown"
    assert dr["readiness"]["reasons"] == ["region_unreachable"]
    assert (dr["writer"], dr["writer_seen_from"]) == (False, PRIMARY)
    assert primary["reachable"] is True
    assert (primary["writer"], primary["processing"]) == (True, True)
    _readiness_shape(primary)

    assert human.returncode == 0
    assert "Traceback" not in human.stderr
    assert "reachable   NO - " in human.stdout

    back = _json(twin_dir)["regions"][DR]
    assert back["reachable"] is True
    assert back["processing"] is False
