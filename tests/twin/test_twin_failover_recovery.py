"""Forcing, failing back and surviving a crash, on a twin of its own (x10, automatic failover on).

The app is deployed with ``--parameter-overrides FailoverMinDelaySeconds=5 FailoverLeaseSeconds=3
FailoverHandlerTimeoutSeconds=10`` (what an
operator would pass to ``sam deploy``), so a failback and a takeover of a dead run fit in a test's time, and
with ``ProcessorSnapStart=enabled``: the processors run restored from snapshots, their mappings on the alias. The
tests run in order on the same twin: a dry run, a forced failover to a DR region that is not ready, the
failback once the old primary caught up, then an automatic failover whose handler is killed after its notice
was recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from failover_handler.plan import STEPS
from tandem.twin.control import call
from tandem_core.readiness import read_readiness
from tests.conftest import eventually, transfer
from tests.twin.conftest import aws
from tests.twin.test_twin_failover import DR, PRIMARY, dns_answer, handler, processing, tandem, writer_region
from tests.twin.test_twin_failover_decisions import committed_in, post, queue_empty

TWIN_SCALE = 10.0
AUTOMATIC_FAILOVER = True
#: ProcessorSnapStart: both processors run from snapshots here, so fencing and failback go through the alias
TWIN_PARAMETER_OVERRIDES = {
    "FailoverMinDelaySeconds": "5",
    "FailoverLeaseSeconds": "3",
    "FailoverHandlerTimeoutSeconds": "10",  # the lease outlives it (+5 s): a killed run is resumed after 15 s
    "ProcessorSnapStart": "enabled",
}


def restores(twin_dir: Path, region: str) -> int:
    """How often ``region``'s processor was restored from its snapshot, as the function's output says (the twin
    keeps each function's output in its state directory)."""
    log = twin_dir / f"transaction_processor-{region}.log"
    return log.read_text(encoding="utf-8").count('"restored: randomness reseeded') if log.exists() else 0


def verdict(twin: dict[str, Any], region: str, since: float = 0.0) -> str | None:
    """``region``'s readiness verdict as its monitor wrote it (measured after ``since``), read in its replica."""
    table = twin["regions"][region]["resources"]["ledger_table"]
    record = read_readiness(aws(twin, region, "dynamodb"), table, region) or {}
    return record.get("verdict") if float(record.get("measured_at_epoch", 0)) > since else None


def run(twin_dir: Path, *args: str) -> dict[str, Any]:
    """An operator command's JSON answer (exit 0 when it ran, 1 when refused)."""
    done = tandem(twin_dir, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def live_state(twin: dict[str, Any]) -> dict[str, Any]:
    """Everything a run would change, read from the outside."""
    status = handler(twin, DR, {"action": "status"})
    return {
        "writer": writer_region(twin), "processing": {r: processing(twin, r) for r in (PRIMARY, DR)},
        "dns": dns_answer(twin), "control": status["control"], "executions": status["executions"],
    }  # fmt: skip


def test_plan_changes_nothing(twin: dict[str, Any], twin_dir: Path) -> None:
    assert eventually(lambda: verdict(twin, DR) == "ready", timeout=60)
    before = live_state(twin)
    plan = run(twin_dir, "plan")["plan"]
    assert (plan["allowed"], plan["mode"], plan["steps"]) == (True, "switchover", list(STEPS))  # primary answers
    assert live_state(twin) == before


def test_force_overrides_a_dr_region_that_is_not_ready(twin: dict[str, Any], twin_dir: Path) -> None:
    assert eventually(lambda: verdict(twin, DR) == "ready", timeout=60)
    call(twin_dir, "POST", "/replication/pause/aurora")  # DR's ledger falls behind past the RPO budget
    try:
        assert eventually(lambda: verdict(twin, DR) == "not_ready", timeout=60)
        refused = run(twin_dir, "failover")
        assert (refused["outcome"], refused["reasons"]) == ("refused", ["region_not_ready"])
        assert writer_region(twin) == PRIMARY

        forced = run(twin_dir, "failover", "--force")
    finally:
        call(twin_dir, "POST", "/replication/resume/aurora")
    assert forced["outcome"] == "completed", forced
    execution = forced["execution"]
    assert (execution["trigger"], execution["mode"]) == ("operator", "failover")  # not caught up: AllowDataLoss
    assert execution["rpo_estimate_seconds"] is not None  # the lag measured before: what this may have cost
    assert (writer_region(twin), processing(twin, DR), processing(twin, PRIMARY)) == (DR, "Enabled", "Disabled")
    assert handler(twin, DR, {"action": "status"})["control"]["epoch"] == 1


def test_failback_is_refused_until_the_old_primary_caught_up_then_loses_nothing(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    assert writer_region(twin) == DR
    call(twin_dir, "POST", "/replication/pause/aurora")  # now DR -> the old primary
    try:
        assert eventually(lambda: verdict(twin, PRIMARY) == "not_ready", timeout=60)
        refused = run(twin_dir, "failback")
        assert refused["outcome"] == "refused"
        assert "region_not_ready" in refused["reasons"], refused["reasons"]
        assert (writer_region(twin), processing(twin, DR)) == (DR, "Enabled")  # nothing changed
    finally:
        call(twin_dir, "POST", "/replication/resume/aurora")
    assert eventually(lambda: verdict(twin, PRIMARY) == "ready", timeout=60)

    before = [transfer("acc-back-1", "acc-back-2", amount=f"{i + 1}.00") for i in range(5)]
    assert [post(twin, DR, b) for b in before] == [200] * 5  # DR is active: producers send there
    back = run(twin_dir, "failback")
    assert back["outcome"] == "completed", back
    execution = back["execution"]
    assert (execution["action"], execution["mode"], execution["rpo_estimate_seconds"]) == ("failback", "switchover", 0)
    assert (writer_region(twin), processing(twin, PRIMARY), processing(twin, DR)) == (PRIMARY, "Enabled", "Disabled")
    after = [transfer("acc-back-1", "acc-back-2", amount=f"{i + 6}.00") for i in range(5)]
    assert [post(twin, PRIMARY, b) for b in after] == [200] * 5
    regions = eventually(lambda: committed_in(twin, before + after), timeout=60, interval=1.0)
    assert regions, "not everything sent around the failback was committed"
    assert set(regions[len(before) :]) == {PRIMARY}
    assert eventually(lambda: queue_empty(twin, PRIMARY) and queue_empty(twin, DR), timeout=30)
    # both regions committed through processors restored from a snapshot (SnapStart on, the alias mapped)
    assert min(restores(twin_dir, PRIMARY), restores(twin_dir, DR)) > 0, "a region ran without its snapshot"


def test_a_run_killed_after_a_step_is_resumed_by_lambdas_retry_and_runs_no_recorded_step_twice(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    assert writer_region(twin) == PRIMARY
    control = handler(twin, DR, {"action": "status"})["control"]
    epoch, failback_at = control["epoch"], float(control["last_finished_at"])
    # DR follows a new writer since the failback: only a verdict measured since then says it can take over
    assert eventually(lambda: verdict(twin, DR, since=failback_at) == "ready", timeout=60)
    sqs, sns = aws(twin, DR, "sqs"), aws(twin, DR, "sns")
    topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if "alarm" in t["TopicArn"].lower())
    inbox = sqs.create_queue(QueueName="on-call-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)

    # the handler dies right after DynamoDB applied the step_done of its notice, before it hears back
    fault = {"after_call": "DynamoDB_20120810.UpdateItem", "matching": '"notify"'}
    armed = call(twin_dir, "POST", f"/faults/kill/{DR}/failover_handler", body=fault)
    assert armed["regions"][DR]["faults_pending"] == 1
    call(twin_dir, "POST", f"/outage/{PRIMARY}")
    try:
        seen: list[dict[str, Any]] = []

        def finished() -> dict[str, Any] | None:
            status = handler(twin, DR, {"action": "status"})
            seen[:] = [status]
            control, executions = status["control"], status["executions"]
            done = control["epoch"] == epoch + 1 and control["state"] == "idle" and executions
            return executions[0] if done else None

        execution = eventually(finished, timeout=90, interval=1.0)
    finally:
        call(twin_dir, "POST", f"/restore/{PRIMARY}")
    assert execution, f"the killed run was not resumed: {seen} {call(twin_dir, 'GET', '/status')}"
    assert (execution["trigger"], execution["outcome"]) == ("alarm", "completed")
    names = [s["name"] for s in execution["steps"]]
    assert sorted(names) == sorted(STEPS)  # every step, each once
    by_the_dead = {s["name"]: s["outcome"] for s in execution["steps"] if s["started_at"] is None}
    assert by_the_dead.get("notify") == "completed"  # recorded by the invocation that died (with what else it did)
    assert (writer_region(twin), processing(twin, DR)) == (DR, "Enabled")
    assert eventually(lambda: processing(twin, PRIMARY) == "Disabled", timeout=30)  # restored: fences itself

    shown = call(twin_dir, "GET", "/status")
    assert shown["regions"][DR]["faults_pending"] == 0
    assert shown["regions"][DR]["functions"]["failover_handler"]["restarts"] >= 1  # it really died
    assert shown["async_invocations"]["retried"] >= 1  # and Lambda's retry of the alarm's event resumed it

    def notices() -> list[str]:
        got = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [str(json.loads(m["Body"]).get("Subject", "")) for m in got]

    subjects = [s for _ in range(3) for s in notices()]
    assert subjects.count(f"Tandem failover to {DR} (failover)") == 1, subjects  # a recorded step never runs again
