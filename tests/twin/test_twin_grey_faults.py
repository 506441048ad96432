"""Grey failures on the twin, seen from outside: one part of a region down while the rest keeps working, a
partitioned region invisible to Route53's checkers, and a slow Aurora control plane.

One twin for the module (x600: a 10 s health-check interval is 17 ms, 1800 emulated seconds are 3 s). Each
test restores what it broke; the promotion test moves the writer and comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from tandem.twin.control import call
from tests.conftest import ROOT, eventually
from tests.twin.conftest import aws, pg

PRIMARY, DR = "us-east-1", "us-west-2"


def _cli(twin_dir: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """`tandem twin ARGS` as an operator runs it; it must exit with ``code``."""
    env = {**os.environ, "TANDEM_TWIN_DIR": str(twin_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "twin", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == code, proc.stderr
    return proc


def _health(twin: dict[str, Any], region: str) -> int | None:
    """GET /health on the region's ingress, as a producer or Route53 would: the status, None when refused."""
    try:
        with urllib.request.urlopen(f"{twin['regions'][region]['ingress']}/health", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return None


def _observed(twin: dict[str, Any], region: str) -> str:
    """What Route53's checkers report of the region's endpoint check ("Success" or "Failure"), all agreeing."""
    route53 = aws(twin, DR, "route53")  # Route53 is global: any region's endpoint answers
    checks = route53.list_health_checks()["HealthChecks"]
    ids = [
        c["Id"]
        for c in checks
        if c["HealthCheckConfig"]["Type"] in ("HTTP", "HTTPS")
        and region in c["HealthCheckConfig"].get("FullyQualifiedDomainName", "")
    ]
    assert len(ids) == 1, checks
    observations = route53.get_health_check_status(HealthCheckId=ids[0])["HealthCheckObservations"]
    verdicts = {str(o["StatusReport"]["Status"]).split(":", 1)[0] for o in observations}
    assert len(verdicts) == 1, observations
    return verdicts.pop()


def _settled(twin: dict[str, Any], region: str, verdict: str) -> bool:
    """The check reports ``verdict`` within 10 s, and still does ~18 intervals later (no flapping)."""
    if not eventually(lambda: _observed(twin, region) == verdict, timeout=10):
        return False
    time.sleep(0.3)
    return _observed(twin, region) == verdict


def _global(twin: dict[str, Any], rds: Any) -> dict[str, Any]:
    found: dict[str, Any] = rds.describe_global_clusters(GlobalClusterIdentifier=twin["global_cluster"])[
        "GlobalClusters"][0]  # fmt: skip
    return found


def _writers(described: dict[str, Any]) -> dict[str, bool]:
    return {m["DBClusterArn"].split(":")[3]: m["IsWriter"] for m in described["GlobalClusterMembers"]}


def test_a_database_outage_leaves_the_regions_apis_ingress_and_dns_check_working(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    status = call(twin_dir, "POST", f"/outage/{PRIMARY}", body={"only": "database"})
    try:
        assert (status["regions"][PRIMARY]["outage"], status["regions"][DR]["outage"]) == ("database", None)
        assert status["regions"][PRIMARY]["up"] is True
        with pytest.raises((pg8000.native.InterfaceError, OSError)):
            pg(twin, PRIMARY, timeout=2)
        assert _health(twin, PRIMARY) == 200  # GET /health reads SQS and DynamoDB, not the database
        assert aws(twin, PRIMARY, "sqs").list_queues()["QueueUrls"]
        table = twin["regions"][PRIMARY]["resources"]["ledger_table"]
        key = {"pk": {"S": "PROBE#grey-database"}, "sk": {"S": "x"}}
        aws(twin, PRIMARY, "dynamodb").put_item(TableName=table, Item=key)
        dr = aws(twin, DR, "dynamodb")
        assert eventually(lambda: dr.get_item(TableName=table, Key=key).get("Item"))  # still replicating
        assert _settled(twin, PRIMARY, "Success")
        refused = _cli(twin_dir, "outage", PRIMARY, "--only", "ingress", code=2)  # one outage at a time
        assert (
            refused.stderr.strip() == f"tandem twin: {PRIMARY} already has an outage (database only); restore it first"
        )
    finally:
        call(twin_dir, "POST", f"/restore/{PRIMARY}")
    writer = pg(twin, PRIMARY)
    assert writer.run("SELECT pg_is_in_recovery()") == [[False]]  # back as the writer it still is
    writer.close()
    assert call(twin_dir, "GET", "/status")["regions"][PRIMARY]["outage"] is None


def test_an_ingress_outage_refuses_the_api_and_route53_sees_it_fail_until_restored(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    assert _observed(twin, PRIMARY) == "Success"
    _cli(twin_dir, "outage", PRIMARY, "--only", "ingress")
    try:
        shown = json.loads(_cli(twin_dir, "status", "--json").stdout)
        assert shown["regions"][PRIMARY]["outage"] == "ingress"
        assert _health(twin, PRIMARY) is None  # nothing listens
        assert aws(twin, PRIMARY, "sqs").list_queues()["QueueUrls"]  # the region's APIs answer
        pg(twin, PRIMARY).close()  # and its database
        assert _settled(twin, PRIMARY, "Failure")
        assert _observed(twin, DR) == "Success"
    finally:
        _cli(twin_dir, "restore", PRIMARY)
    assert _health(twin, PRIMARY) == 200
    assert _settled(twin, PRIMARY, "Success")


def test_a_functions_outage_fails_every_invocation_and_the_ingress_answers_5xx(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    call(twin_dir, "POST", f"/outage/{DR}", body={"only": "functions"})
    try:
        reply = call(twin_dir, "POST", f"/invoke/{DR}/region_health", body={})
        assert (reply["ok"], reply["errorType"]) == (False, "ServiceUnavailable")
        assert _health(twin, DR) == 500
        assert _settled(twin, DR, "Failure")
        assert _observed(twin, PRIMARY) == "Success"
    finally:
        call(twin_dir, "POST", f"/restore/{DR}")
    assert _health(twin, DR) == 200
    assert _settled(twin, DR, "Success")


def test_a_partitioned_region_is_invisible_to_route53_while_the_other_stays_healthy(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    call(twin_dir, "POST", f"/partition/{PRIMARY}")
    try:
        assert _settled(twin, PRIMARY, "Failure")
        assert _observed(twin, DR) == "Success"
        assert _health(twin, PRIMARY) == 200  # its own producers still reach it directly
    finally:
        call(twin_dir, "POST", f"/heal/{PRIMARY}")
    assert _settled(twin, PRIMARY, "Success")


def test_a_delayed_promotion_is_accepted_at_once_and_moves_the_writer_after_the_delay(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    out = _cli(twin_dir, "fault", "promotion", "--delay", "1800")  # 3 s at x600
    assert "moves the writer 1800 emulated seconds late" in out.stdout
    assert call(twin_dir, "GET", "/status")["promotion_delay_seconds"] == 1800
    rds = aws(twin, DR, "rds")
    accepted = rds.switchover_global_cluster(
        GlobalClusterIdentifier=twin["global_cluster"], TargetDbClusterIdentifier=twin["regions"][DR]["cluster"]
    )["GlobalCluster"]
    assert accepted["Status"] == "switching-over"
    status = call(twin_dir, "GET", "/status")
    assert status["writer_region"] == PRIMARY
    assert (status["promotion_delay_seconds"], status["promotion_in_progress"]["to_region"]) == (0, DR)
    described = _global(twin, rds)
    assert described["Status"] == "switching-over"
    assert _writers(described) == {PRIMARY: True, DR: False}

    assert eventually(lambda: call(twin_dir, "GET", "/status")["writer_region"] == DR, timeout=60)
    assert eventually(lambda: call(twin_dir, "GET", "/status")["promotion_in_progress"] is None)
    described = eventually(lambda: (g := _global(twin, rds))["Status"] == "available" and g)
    assert described
    assert _writers(described) == {PRIMARY: False, DR: True}
