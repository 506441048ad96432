"""The replication monitor on the twin, seen where an operator stands: `tandem status --json` and CloudWatch.

The twin runs at x10, so a monitor period (the one-minute schedule) is 6 real seconds and a probe round 1 s.
Lags and heartbeat ages are real seconds. A paused store must show up in the DR region's verdict, naming the
store, within 3 periods, with its lag metric rising; a resumed one returns to ready. A primary outage must
show as an unhealthy peer with a heartbeat growing old - and nothing may fail over.

After a DynamoDB or S3 pause, AWS's ReplicationLatency reports the backlog's latency for the minute it
drained in; the monitor reads the latest period's Maximum, so the stall stops counting a period or two after it
ended. The twin publishes per emulated minute with real timestamps and deploys the monitor with a period of
60/scale real seconds (ReplicationMetricPeriodSeconds), so the same holds here: ready again within 3 runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pg8000.native
import pytest

from tandem.localpg import connect_uri
from tandem.twin.control import call
from tandem_core.heartbeat import from_attributes
from tandem_core.readiness import readiness_key
from tests.conftest import ROOT, eventually
from tests.twin.conftest import aws

PRIMARY, DR = "us-east-1", "us-west-2"
SCALE = TWIN_SCALE = 10.0
AUTOMATIC_FAILOVER = False  # the monitor alone never fails over
PERIOD = 60.0 / SCALE  # real seconds between monitor runs
LAG_METRIC = {"aurora": "AuroraLagSeconds", "dynamodb": "DynamoDbLagSeconds", "s3": "S3LagSeconds"}
RECOVERY = 120.0  # real seconds for a resumed store to read ready again (see the module docstring)


def status(twin_dir: Path) -> dict[str, Any]:
    """`tandem status --json`, run as the operator runs it."""
    env = {**os.environ, "TANDEM_TWIN_DIR": str(twin_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "status", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    shown: dict[str, Any] = json.loads(proc.stdout)
    return shown


def readiness(twin: dict[str, Any], region: str) -> dict[str, Any] | None:
    """The region's readiness record, read with boto3 from that region's table (cheap enough to poll)."""
    table = twin["regions"][region]["resources"]["ledger_table"]
    item = aws(twin, region, "dynamodb").get_item(TableName=table, Key=readiness_key(region), ConsistentRead=True)
    return None if "Item" not in item else from_attributes(item["Item"])


def watch(
    twin: dict[str, Any], region: str, until: Callable[[dict[str, Any]], bool], runs: int, timeout: float
) -> dict[str, Any]:
    """The first new readiness record of ``region`` for which ``until`` holds, within ``runs`` monitor runs.

    The record present when the watch begins is not counted: it was measured before whatever the test did.
    """
    seen: dict[str, str] = {}
    first = readiness(twin, region)
    last = first
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < runs:
        last = readiness(twin, region)
        if last is not None and (first is None or last["measured_at"] != first["measured_at"]):
            seen[last["measured_at"]] = last["verdict"]
            if until(last):
                return last
        time.sleep(0.25)
    pytest.fail(f"{region}: not within {runs} monitor runs ({list(seen.values())}); last record {last}")


def emulated_now(twin_dir: Path) -> float:
    return float(call(twin_dir, "GET", "/status")["clock"]["now"])


def series(twin: dict[str, Any], region: str, metric: str, since: float, until: float, period: int) -> list[float]:
    """The metric's per-period Maximum in the region's CloudWatch (emulated time), oldest first."""
    points = aws(twin, region, "cloudwatch").get_metric_statistics(
        Namespace="Tandem/Replication", MetricName=metric, Dimensions=[{"Name": "Region", "Value": region}],
        StartTime=datetime.fromtimestamp(since, UTC), EndTime=datetime.fromtimestamp(until, UTC),
        Period=period, Statistics=["Maximum"],
    )["Datapoints"]  # fmt: skip
    return [p["Maximum"] for p in sorted(points, key=lambda p: p["Timestamp"])]


def test_a_fresh_twin_is_ready_in_both_regions_within_three_monitor_periods(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    runs: dict[str, dict[str, str]] = {PRIMARY: {}, DR: {}}  # every readiness record seen, one per run
    ready: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10 * PERIOD
    while len(ready) < 2 and time.monotonic() < deadline:
        for region in set(runs) - set(ready):
            record = readiness(twin, region)
            if record is not None:
                runs[region][record["measured_at"]] = record["verdict"]
                if record["verdict"] == "ready":
                    ready[region] = record
        time.sleep(0.25)
    assert set(ready) == {PRIMARY, DR}, runs
    for region, record in ready.items():
        assert len(runs[region]) <= 3, runs[region]  # ready at the 1st, 2nd or 3rd run
        assert record["reasons"] == []
        assert all(lag is not None and lag < 2.0 for lag in record["lag_seconds"].values())
        assert record["peer"]["healthy"] is True
    shown = status(twin_dir)["regions"]
    assert {r: v["readiness"]["verdict"] for r, v in shown.items()} == {PRIMARY: "ready", DR: "ready"}
    metrics = aws(twin, DR, "cloudwatch").list_metrics(Namespace="Tandem/Replication")["Metrics"]
    assert {m["MetricName"] for m in metrics} == {
        *LAG_METRIC.values(),
        "PeerHealthy",
        "PeerHeartbeatAgeSeconds",
        "PeerLedgerFailingSeconds",  # the active primary's word on its ledger (0: it commits)
        "Ready",
        "FailoverArmed",
    }
    assert all(m["Dimensions"] == [{"Name": "Region", "Value": DR}] for m in metrics)


def test_dr_is_observed_through_its_reader_endpoint_while_its_cluster_endpoint_is_inactive(
    twin: dict[str, Any],
) -> None:
    """A global secondary's writer (cluster) endpoint answers nothing until promotion; its reader endpoint does.
    The endpoints are the ones the global stacks published for the apps (SSM), reached with plain pg8000."""
    uri = urlparse(twin["regions"][DR]["postgres"])
    ssm = aws(twin, DR, "ssm")
    writer_host, reader_host = (
        ssm.get_parameter(Name=f"/tandem/dr/{name}")["Parameter"]["Value"]
        for name in ("ledger-db-host", "ledger-db-reader-host")
    )
    assert writer_host != reader_host
    with pytest.raises((pg8000.native.InterfaceError, OSError)):
        connect_uri(uri._replace(netloc=f"{uri.username}:{uri.password}@{writer_host}:{uri.port}").geturl(), timeout=5)
    reader = connect_uri(uri._replace(netloc=f"{uri.username}:{uri.password}@{reader_host}:{uri.port}").geturl())
    assert reader.run("SELECT pg_is_in_recovery()") == [[True]]
    reader.close()
    primary = urlparse(twin["regions"][PRIMARY]["postgres"])
    writer = aws(twin, PRIMARY, "ssm").get_parameter(Name="/tandem/primary/ledger-db-host")["Parameter"]["Value"]
    through_gate = connect_uri(
        primary._replace(netloc=f"{primary.username}:{primary.password}@{writer}:{primary.port}").geturl()
    )
    assert through_gate.run("SELECT pg_is_in_recovery()") == [[False]]  # the writer region's endpoint is active
    through_gate.close()
    reply = aws(twin, DR, "lambda").invoke(
        FunctionName=f"{twin['regions'][DR]['resources']['stack']}-replication-monitor-aurora", Payload=b"{}"
    )
    observed = json.loads(reply["Payload"].read())
    assert (observed["reachable"], observed["writer"]) == (True, False), observed
    assert observed["heartbeat_age_seconds"] is not None  # the writer's row, replicated


@pytest.mark.parametrize("store", ["aurora", "dynamodb", "s3"])
def test_a_paused_store_is_named_in_the_dr_verdict_within_three_runs_and_its_lag_rises(
    twin: dict[str, Any], twin_dir: Path, store: str
) -> None:
    """Each store in turn; the resumed ones recover in the background (the last test waits for ready)."""
    paused_at = emulated_now(twin_dir)
    call(twin_dir, "POST", f"/replication/pause/{store}")
    try:
        record = watch(twin, DR, lambda r: f"{store}_lag_above_budget" in r["reasons"], runs=3, timeout=6 * PERIOD)
        assert record["verdict"] == "not_ready"
        if store == "aurora":  # the first one paused: nothing else is wrong
            assert record["reasons"] == ["aurora_lag_above_budget"]
        lag = record["lag_seconds"][store]
        assert watch(twin, DR, lambda r: r["lag_seconds"][store] > lag, runs=2, timeout=4 * PERIOD)

        def climbed() -> list[float] | None:
            """The published lag, a datapoint a run from just before the pause: from its steady level to past
            the budget (a run's metrics reach CloudWatch a tick after its record)."""
            lags = series(twin, DR, LAG_METRIC[store], paused_at - 2 * 60, emulated_now(twin_dir) + 60, period=60)
            return lags if lags[-1] > max(5.0, lags[0]) else None

        assert eventually(climbed, 2 * PERIOD), series(
            twin, DR, LAG_METRIC[store], paused_at - 120, paused_at + 900, 60
        )
        shown = status(twin_dir)["regions"][DR]["readiness"]  # what the operator sees
        assert shown["verdict"] == "not_ready"
        assert f"{store}_lag_above_budget" in shown["reasons"]
    finally:
        call(twin_dir, "POST", f"/replication/resume/{store}")


@pytest.mark.parametrize("store", ["dynamodb", "s3"])
def test_a_stall_that_ended_stops_blocking_the_failover_within_three_monitor_periods(
    twin: dict[str, Any], twin_dir: Path, store: str
) -> None:
    """Finding 7 of the failover issue: after a pause and resume, DR stayed not_ready (dynamodb_lag_above_budget)
    or degraded (s3_lag_above_warning) for ~40 real seconds at x60 - the monitor read a one-minute Maximum of
    datapoints stamped in real time, 60 monitor periods there."""
    watch(twin, DR, lambda r: r["verdict"] == "ready", runs=60, timeout=RECOVERY)  # the earlier pauses are over
    call(twin_dir, "POST", f"/replication/pause/{store}")
    try:
        watch(twin, DR, lambda r: f"{store}_lag_above_budget" in r["reasons"], runs=4, timeout=8 * PERIOD)
    finally:
        call(twin_dir, "POST", f"/replication/resume/{store}")
    record = watch(twin, DR, lambda r: r["verdict"] == "ready", runs=3, timeout=5 * PERIOD)
    assert record["reasons"] == []


def test_a_primary_outage_shows_an_unhealthy_peer_and_an_ageing_heartbeat_and_nothing_fails_over(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    lost_at = emulated_now(twin_dir)
    call(twin_dir, "POST", f"/outage/{PRIMARY}")
    try:
        watch(twin, DR, lambda r: True, runs=1, timeout=3 * PERIOD)
        record = watch(twin, DR, lambda r: True, runs=1, timeout=3 * PERIOD)  # a run wholly in the outage
        assert record["peer"]["healthy"] is False
        assert record["peer"]["probes_healthy"] == 0
        assert record["peer"]["heartbeat_age_seconds"] > PERIOD
        healthy = series(twin, DR, "PeerHealthy", lost_at + 10, emulated_now(twin_dir) + 10, period=10)
        ages = series(twin, DR, "PeerHeartbeatAgeSeconds", lost_at + 10, emulated_now(twin_dir) + 10, period=10)
        assert healthy, "no PeerHealthy datapoints in the outage"
        assert set(healthy[-3:]) == {0.0}, healthy
        assert len(ages) >= 5, ages
        assert ages == sorted(ages), ages
        assert ages[-1] > ages[0] + 3, ages
        shown = status(twin_dir)
        dr = shown["regions"][DR]
        assert dr["peer"]["healthy"] is False
        assert (dr["writer"], dr["processing"]) == (False, False)  # no failover of any kind
        assert shown["global_cluster"]["writer_region"] == PRIMARY
    finally:
        call(twin_dir, "POST", f"/restore/{PRIMARY}")


def test_resumed_stores_and_a_restored_primary_bring_the_dr_region_back_to_ready(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    """DynamoDB's and S3's ReplicationLatency report the drained backlog for the minute it drained in."""
    record = watch(twin, DR, lambda r: r["verdict"] == "ready", runs=40, timeout=RECOVERY)
    assert all(lag < 2.0 for lag in record["lag_seconds"].values()), record["lag_seconds"]
    assert record["peer"]["healthy"] is True
    shown = status(twin_dir)["regions"][DR]
    assert (shown["readiness"]["verdict"], shown["peer"]["healthy"]) == ("ready", True)
