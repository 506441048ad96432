"""The twin's contract: status, outages that refuse connections, restore, and a clean `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
from botocore.exceptions import EndpointConnectionError

from tandem.twin.control import call
from tests.conftest import ROOT
from tests.twin.conftest import aws, pg

PRIMARY, DR = "us-east-1", "us-west-2"


def test_status_lists_both_regions_with_endpoints_and_databases(twin: dict[str, Any]) -> None:
    regions = twin["regions"]
    assert set(regions) == {PRIMARY, DR}
    assert regions[PRIMARY]["role"] == "primary"
    assert regions[DR]["role"] == "dr"
    for info in regions.values():
        assert info["up"] is True
        assert info["endpoint"].startswith("http://127.0.0.1:")
        assert info["postgres"].startswith("postgresql://")
    assert twin["writer_region"] == PRIMARY


def test_the_global_cluster_is_visible_from_both_regions(twin: dict[str, Any]) -> None:
    for region in (PRIMARY, DR):
        clusters = aws(twin, region, "rds").describe_global_clusters()["GlobalClusters"]
        assert [c["GlobalClusterIdentifier"] for c in clusters] == [twin["global_cluster"]]


def test_the_dr_database_is_a_read_only_streaming_replica(twin: dict[str, Any]) -> None:
    writer = pg(twin, PRIMARY)
    writer.run("CREATE TABLE IF NOT EXISTS twin_probe (id int PRIMARY KEY)")
    writer.run("INSERT INTO twin_probe VALUES (1) ON CONFLICT DO NOTHING")
    reader = pg(twin, DR)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and reader.run("SELECT to_regclass('twin_probe') IS NULL")[0][0]:
        time.sleep(0.05)
    while time.monotonic() < deadline and not reader.run("SELECT count(*) FROM twin_probe WHERE id = 1")[0][0]:
        time.sleep(0.05)
    assert reader.run("SELECT count(*) FROM twin_probe WHERE id = 1") == [[1]]
    with pytest.raises(pg8000.native.DatabaseError, match="read-only"):
        reader.run("INSERT INTO twin_probe VALUES (2)")
    writer.close()
    reader.close()


def test_an_outage_refuses_the_regions_api_and_database_while_the_other_serves(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    queues = aws(twin, DR, "sqs")
    call(twin_dir, "POST", f"/outage/{DR}")
    try:
        with pytest.raises(EndpointConnectionError):
            queues.list_queues()
        with pytest.raises((pg8000.native.InterfaceError, OSError)):
            pg(twin, DR, timeout=2)
        assert aws(twin, PRIMARY, "sqs").list_queues()["QueueUrls"]
        pg(twin, PRIMARY).close()
        status = call(twin_dir, "GET", "/status")
        assert status["regions"][DR]["up"] is False
    finally:
        call(twin_dir, "POST", f"/restore/{DR}")
    assert queues.list_queues()["QueueUrls"]
    reader = pg(twin, DR)
    assert reader.run("SELECT pg_is_in_recovery()") == [[True]]
    reader.close()


def test_the_primary_function_runs_and_the_dr_one_is_fenced(twin: dict[str, Any], twin_dir: Path) -> None:
    """DR is not the active region: its processor refuses the batch before it touches its read-only ledger."""
    event = (ROOT / "events" / "sqs_valid_batch.json").read_bytes()
    state = json.loads((twin_dir / "twin.json").read_text())
    import urllib.request

    def invoke(region: str) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{state['control_port']}/invoke/{region}/transaction_processor", data=event
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    assert invoke(PRIMARY) == {"ok": True, "response": {"batchItemFailures": []}}
    refused = invoke(DR)
    every = [{"itemIdentifier": r["messageId"]} for r in json.loads(event)["Records"]]
    assert refused == {"ok": True, "response": {"batchItemFailures": every}}  # all back to the queue, untouched


def _cli(*args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANDEM_TWIN_DIR": str(env_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", "twin", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_restore_or_outage_of_a_region_in_that_state_already_is_one_line(twin: dict[str, Any], twin_dir: Path) -> None:
    env_dir = twin_dir
    restore = _cli("restore", PRIMARY, env_dir=env_dir)
    assert restore.returncode == 2
    assert restore.stderr.strip() == f"tandem twin: {PRIMARY} is not down; nothing to restore"
    call(twin_dir, "POST", f"/outage/{DR}")
    try:
        again = _cli("outage", DR, env_dir=env_dir)
        assert again.returncode == 2
        assert again.stderr.strip() == f"tandem twin: {DR} is already down"
    finally:
        call(twin_dir, "POST", f"/restore/{DR}")


def test_a_dead_function_worker_is_replaced_on_the_next_invocation(twin: dict[str, Any], twin_dir: Path) -> None:
    """As Lambda replaces a failed execution environment: a new process (cold start), and the death is logged."""
    fn = "transaction_processor"
    event = json.loads((ROOT / "events" / "sqs_valid_batch.json").read_text())
    assert call(twin_dir, "POST", f"/invoke/{PRIMARY}/{fn}", body=event)["ok"] is True  # it has a process now
    before = call(twin_dir, "GET", "/status")["regions"][PRIMARY]["functions"][fn]
    os.kill(before["pid"], 9)
    time.sleep(0.2)
    reply = call(twin_dir, "POST", f"/invoke/{PRIMARY}/{fn}", body=event)
    assert reply["ok"] is True
    after = call(twin_dir, "GET", "/status")["regions"][PRIMARY]["functions"][fn]
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1
    log = (twin_dir / f"{fn}-{PRIMARY}.log").read_text()
    assert "execution environment exited with -9 between invocations; starting a new one" in log
    assert '"cold_start":true' in log.rsplit("starting a new one", 1)[1]
