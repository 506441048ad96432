"""Automatic failover on the twin: a primary region outage, and nobody calls the handler.

The twin runs at x10 (a monitor period is 6 real seconds, a probe round 1 s). The DR region's composite alarm
"peer region impaired" (heartbeat stale AND /health failing) goes to ALARM, EventBridge invokes DR's failover
handler, and the handler - through the real APIs of the twin - promotes Aurora, enables DR processing, flips
the DNS gate, notifies and records the execution. Everything is checked from the outside: boto3 against
the twin, Lambda Invoke of the handler's status action, Route53 TestDNSAnswer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from failover_handler.plan import PLANNED_OVERRIDABLE
from tandem.twin.control import call
from tandem_core.readiness import read_readiness
from tandem_core.status import StatusStore
from tests.conftest import ROOT, eventually, transfer
from tests.twin.conftest import aws

PRIMARY, DR = "us-east-1", "us-west-2"
SCALE = TWIN_SCALE = 10.0
AUTOMATIC_FAILOVER = True
RECORD = "txn.tandem.twin.internal"


def handler(twin: dict[str, Any], region: str, request: dict[str, Any]) -> dict[str, Any]:
    """The failover handler's answer, by Lambda Invoke as `tandem` will call it."""
    name = twin["regions"][region]["functions"]["failover_handler"]["name"]
    reply = aws(twin, region, "lambda").invoke(FunctionName=name, Payload=json.dumps(request).encode())
    assert "FunctionError" not in reply, reply["Payload"].read()
    answer: dict[str, Any] = json.loads(reply["Payload"].read())
    return answer


def writer_region(twin: dict[str, Any]) -> str:
    found = aws(twin, DR, "rds").describe_global_clusters(GlobalClusterIdentifier=twin["global_cluster"])
    members = found["GlobalClusters"][0]["GlobalClusterMembers"]
    arn = next(m["DBClusterArn"] for m in members if m["IsWriter"])
    return DR if twin["regions"][DR]["cluster"] in arn else PRIMARY


def processing(twin: dict[str, Any], region: str) -> str:
    alias = twin["regions"][region]["functions"]["transaction_processor"]["alias"]  # what the mapping invokes
    mappings = aws(twin, region, "lambda").list_event_source_mappings(FunctionName=alias)["EventSourceMappings"]
    return str(mappings[0]["State"])


def dns_answer(twin: dict[str, Any]) -> list[str]:
    route53 = aws(twin, DR, "route53")  # Route53 is global: any region's endpoint answers
    zone = next(z["Id"] for z in route53.list_hosted_zones()["HostedZones"] if z["Name"].startswith("tandem.twin"))
    answer = route53.test_dns_answer(HostedZoneId=zone, RecordName=RECORD, RecordType="CNAME")
    return list(answer["RecordData"])


def tandem(twin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator CLI as an operator runs it (the twin's state dir in the environment)."""
    env = {**os.environ, "TANDEM_TWIN_DIR": str(twin_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_an_operator_failover_to_a_dr_region_that_is_not_ready_is_refused_and_changes_nothing(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    table = twin["regions"][DR]["resources"]["ledger_table"]
    db = aws(twin, DR, "dynamodb")
    call(twin_dir, "POST", "/replication/pause/aurora")  # DR's ledger falls behind past the RPO budget
    try:
        assert eventually(lambda: (read_readiness(db, table, DR) or {}).get("verdict") == "not_ready", timeout=60)
        refused = tandem(twin_dir, "failover")
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout.strip() == f"failover to {DR} REFUSED: region_not_ready"
    finally:
        call(twin_dir, "POST", "/replication/resume/aurora")
    assert (writer_region(twin), processing(twin, DR), processing(twin, PRIMARY)) == (PRIMARY, "Disabled", "Enabled")
    (record,) = handler(twin, DR, {"action": "status"})["executions"]  # recorded (and paged), nothing else
    assert (record["trigger"], record["outcome"], record["reasons"]) == ("operator", "refused", ["region_not_ready"])
    assert handler(twin, DR, {"action": "status"})["control"]["epoch"] == 0


def test_a_primary_outage_alone_ends_with_dr_active_and_dns_on_dr(twin: dict[str, Any], twin_dir: Path) -> None:
    table = twin["regions"][DR]["resources"]["ledger_table"]
    db = aws(twin, DR, "dynamodb")
    assert eventually(lambda: (read_readiness(db, table, DR) or {}).get("verdict") == "ready", timeout=60)
    primary_ingress = dns_answer(twin)
    assert writer_region(twin) == PRIMARY
    assert (processing(twin, PRIMARY), processing(twin, DR)) == ("Enabled", "Disabled")

    lost = time.monotonic()
    call(twin_dir, "POST", f"/outage/{PRIMARY}")
    try:
        assert eventually(lambda: writer_region(twin) == DR, timeout=60, interval=0.5)
        promoted = time.monotonic() - lost

        def finished() -> dict[str, Any] | None:
            answer = handler(twin, DR, {"action": "status"})
            return answer if answer["control"]["state"] == "idle" and answer["control"]["epoch"] else None

        status = eventually(finished, timeout=30, interval=0.5)
        assert status, "the execution did not finish"
        (execution,) = [e for e in status["executions"] if e["outcome"] != "refused"]  # one, however many events
        assert (execution["trigger"], execution["action"], execution["mode"], execution["outcome"]) == (
            "alarm", "failover", "failover", "completed",
        )  # fmt: skip
        steps = {s["name"]: s["outcome"] for s in execution["steps"]}
        assert steps == {
            "promote_database": "completed", "fence_peer_processing": "skipped", "shift_dns": "completed",
            "notify": "completed", "enable_processing": "completed", "apply_accepted": "completed",
        }  # fmt: skip
        assert status["control"]["active_region"] == DR
        assert status["control"]["epoch"] == 1
        assert processing(twin, DR) == "Enabled"
        now = datetime.now(UTC) + timedelta(hours=1)  # the gate datapoint carries the twin's (emulated) time
        gate = aws(twin, DR, "cloudwatch").get_metric_statistics(
            Namespace="Tandem/Failover", MetricName="PrimaryActive", Dimensions=[{"Name": "Gate", "Value": "primary"}],
            StartTime=now - timedelta(hours=3), EndTime=now, Period=60, Statistics=["Minimum"],
        )["Datapoints"]  # fmt: skip
        assert [p["Minimum"] for p in gate] == [0.0]
        assert eventually(lambda: dns_answer(twin) != primary_ingress, timeout=30), "DNS still answers the primary"
        dr_ingress = dns_answer(twin)
        print(f"\nprimary lost -> DR writer in {promoted:.1f} s real (x{SCALE:g}); execution took "
              f"{execution['finished_at'] - execution['started_at']:.2f} s")  # fmt: skip
    finally:
        call(twin_dir, "POST", f"/restore/{PRIMARY}")
    answers = []
    for _ in range(10):  # 5 s = 5 health-check intervals at x10: the primary's ingress answers again meanwhile
        answers.append(dns_answer(twin))
        time.sleep(0.5)
    assert answers == [dr_ingress] * 10  # the gate keeps DNS on DR with the primary back: no automatic failback
    again = handler(twin, DR, {"action": "status"})
    failovers = [e["outcome"] for e in again["executions"] if e["action"] != "reconcile"]
    assert failovers == ["completed", "refused"]  # nothing since (reconciliation may have run: it is no failover)


def test_the_operator_sees_the_execution_and_failback_is_refused_until_allowed(twin_dir: Path) -> None:
    listed = tandem(twin_dir, "executions", "--json")
    assert listed.returncode == 0, listed.stderr
    # newest first; reconciliation (DR's monitor asks for it once the primary is back) is listed beside them
    execution, refused = [e for e in json.loads(listed.stdout) if e["action"] != "reconcile"]
    assert (refused["trigger"], refused["outcome"]) == ("operator", "refused")
    assert set(execution) >= {"id", "trigger", "action", "mode", "outcome", "reasons", "started_at", "finished_at",
                              "steps", "rpo_estimate_seconds"}  # fmt: skip
    assert (execution["trigger"], execution["outcome"]) == ("alarm", "completed")
    assert {s["name"] for s in execution["steps"]} >= {"promote_database", "enable_processing"}

    table = tandem(twin_dir, "executions")
    assert table.returncode == 0, table.stderr
    assert f"active region {DR} (epoch 1)" in table.stdout
    assert "completed" in table.stdout

    shown = json.loads(tandem(twin_dir, "status", "--json").stdout)
    assert (shown["active_region"], shown["epoch"]) == (DR, 1)
    assert (shown["last_execution"]["action"], shown["last_execution"]["outcome"]) == ("failover", "completed")
    assert shown["regions"][DR]["control"]["active_region"] == DR

    plan = tandem(twin_dir, "plan", "--json")  # DR is active: a failover to it now would be refused
    assert plan.returncode == 0, plan.stderr
    assert "already_active" in json.loads(plan.stdout)["plan"]["refused"]

    back = tandem(twin_dir, "failback")
    assert back.returncode == 1
    assert back.stdout.startswith(f"failback to {PRIMARY} REFUSED: ")
    assert "minimum_delay_not_passed" in back.stdout  # 30 minutes since the failover have not passed
    after = json.loads(tandem(twin_dir, "status", "--json").stdout)["last_execution"]
    assert (after["action"], after["outcome"]) == ("failback", "refused")  # recorded (and paged): a human asked

    forced_switch = tandem(twin_dir, "switchover", "--force", "--json")  # force never overrides what is true
    assert forced_switch.returncode == 1
    reasons = json.loads(forced_switch.stdout)["reasons"]
    assert reasons[0] == "already_active"  # DR's readiness may also be true at that instant (the primary just returned)
    assert not set(reasons) & PLANNED_OVERRIDABLE  # what --force may override is gone, what is true is kept


def recorded_processing(twin: dict[str, Any], region: str) -> str:
    """What the next deploy of ``region`` reads as ProcessingEnabled (the SSM parameter samconfig names)."""
    role = "primary" if region == PRIMARY else "dr"
    parameter = aws(twin, region, "ssm").get_parameter(Name=f"/tandem/{role}/processing-enabled")
    return str(parameter["Parameter"]["Value"])


def test_the_restored_old_primary_commits_nothing_switches_itself_off_and_forwards_what_it_holds(
    twin: dict[str, Any],
) -> None:
    """A zombie: the handler could not reach the primary during the outage, so its mapping is still enabled.
    What reaches its queue now (a client with a stale DNS answer) is committed once - by DR."""
    queue = twin["regions"][PRIMARY]["resources"]["queue_url"]
    sqs = aws(twin, PRIMARY, "sqs")
    bodies = [transfer("acc-zombie-1", "acc-zombie-2", amount=f"{i + 1}.00") for i in range(8)]
    for body in bodies:
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    assert eventually(lambda: processing(twin, PRIMARY) == "Disabled", timeout=60, interval=0.5), (
        "the old primary's monitor did not switch its processing off"
    )
    assert recorded_processing(twin, PRIMARY) == "false"
    table = twin["regions"][DR]["resources"]["ledger_table"]
    statuses = StatusStore(aws(twin, DR, "dynamodb"), table)

    def committed() -> list[dict[str, Any]] | None:
        found = [statuses.get(b["transaction_id"]) for b in bodies]
        return None if None in found else [f for f in found if f is not None]

    done = eventually(committed, timeout=90, interval=1.0)
    assert done, "not every message the old primary held was committed"
    assert {s["region"]["S"] for s in done} == {DR}  # committed by the active region, none by the zombie
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    )
    assert processing(twin, DR) == "Enabled"


def test_redeploying_either_region_keeps_the_failover(twin: dict[str, Any], twin_dir: Path) -> None:
    """`sam deploy` of each app again (CloudFormation re-sends every property of the mapping): DR stays the
    region that processes, the old primary stays off, DNS stays on DR."""
    before = dns_answer(twin)
    assert (recorded_processing(twin, DR), recorded_processing(twin, PRIMARY)) == ("true", "false")
    for region in (PRIMARY, DR):
        deployed = tandem(twin_dir, "twin", "deploy", region)
        assert deployed.returncode == 0, deployed.stderr
    assert (processing(twin, DR), processing(twin, PRIMARY)) == ("Enabled", "Disabled")
    assert dns_answer(twin) == before
    assert writer_region(twin) == DR
