"""Reconciliation on a twin of its own (x10, automatic failover off: the operator drives this one; the direct
ingress, so the journal is the only way back for what the old primary committed).

Aurora replay into DR is paused while the primary commits five transfers (journaled, replicated to DR's
archive bucket, status items replicated - but not in DR's ledger); the primary dies; an operator forces the
failover, so DR is promoted without them: real lost writes. Once the primary is back, DR's monitor asks for
reconciliation by itself: it re-applies exactly those five through DR's processor, redrives a valid message
from DR's DLQ and leaves a poison one there with its reason; an operator's `tandem reconcile` then changes
nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tandem.twin.control import call
from tests.conftest import eventually, transfer
from tests.twin.conftest import aws, pg
from tests.twin.test_twin_failover import DR, PRIMARY, handler, tandem, writer_region
from tests.twin.test_twin_failover_decisions import committed_in, post, queue_empty
from tests.twin.test_twin_failover_recovery import run, verdict

TWIN_SCALE = 10.0
#: the direct ingress: with the durable one, the failover's apply_accepted step would apply the five lost writes
#: before the old region returns (tests/unit/test_intake.py, the drill's region-loss) - this test is about the
#: journal bringing them back
TWIN_PARAMETER_OVERRIDES = {"DurableIngress": "disabled"}


def in_ledger(twin: dict[str, Any], region: str, ids: list[str]) -> set[str]:
    """The transaction ids of ``ids`` that ``region``'s ledger holds, read with psql's URI (as an operator)."""
    db = pg(twin, region)
    try:
        sql = (
            "SELECT CAST(transaction_id AS text) FROM ledger_transaction WHERE transaction_id = ANY(CAST(:i AS uuid[]))"
        )
        rows = db.run(sql, i=ids)
    finally:
        db.close()
    return {str(r[0]) for r in rows or []}


def journaled_in(twin: dict[str, Any], region: str) -> set[str]:
    """Transaction ids in ``region``'s archive bucket (its own journal and what replication brought)."""
    s3, bucket = aws(twin, region, "s3"), twin["regions"][region]["resources"]["archive_bucket"]
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="archive/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            found |= {json.loads(line)["transaction"]["transaction_id"] for line in body.splitlines() if line}
    return found


def test_reconcile_reapplies_the_lost_writes_redrives_the_dlq_and_a_second_run_changes_nothing(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    assert eventually(lambda: verdict(twin, DR) == "ready", timeout=60)
    call(twin_dir, "POST", "/replication/pause/aurora")
    try:
        lost = [transfer("acc-lost-1", "acc-lost-2", amount=f"{i + 1}.00") for i in range(5)]
        ids = [b["transaction_id"] for b in lost]
        assert [post(twin, PRIMARY, b) for b in lost] == [200] * 5
        assert eventually(lambda: committed_in(twin, lost) == [PRIMARY] * 5, timeout=60, interval=0.5)
        assert eventually(lambda: set(ids) <= journaled_in(twin, DR), timeout=60, interval=0.5)  # S3 replicated
        # deleted from the queue too: a message still there would come back by forwarding, not by the journal
        assert eventually(lambda: queue_empty(twin, PRIMARY), timeout=30)
        call(twin_dir, "POST", f"/outage/{PRIMARY}")
        forced = run(twin_dir, "failover", "--force")
        assert (forced["outcome"], forced["execution"]["mode"]) == ("completed", "failover"), forced
    finally:
        call(twin_dir, "POST", "/replication/resume/aurora")
    assert writer_region(twin) == DR
    assert in_ledger(twin, DR, ids) == set()  # promoted without them: lost, for now

    sqs, dlq = aws(twin, DR, "sqs"), twin["regions"][DR]["resources"]["dlq_url"]
    valid = transfer("acc-dlq-1", "acc-dlq-2", amount="7.00")  # dead-lettered while the database was down
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(valid))
    sqs.send_message(QueueUrl=dlq, MessageBody='{"transaction_id": "not-a-uuid"}')  # poison stays poison

    call(twin_dir, "POST", f"/restore/{PRIMARY}")  # nobody runs reconcile: DR's monitor asks for it

    def reconciled() -> list[dict[str, Any]]:
        executions = handler(twin, DR, {"action": "status"})["executions"]
        return [e for e in executions if e["action"] == "reconcile" and e["outcome"] == "completed"]

    (automatic,) = eventually(reconciled, timeout=60, interval=1.0)
    assert automatic["trigger"] == "monitor"
    # Runs before it waited (at least for the batches the old primary had in flight once it was seen fenced) or
    # ended partial (its queue not answering yet, just after the restore); each was asked for again on the next
    # monitor run, and together they re-apply exactly what DR's ledger lacked, once.
    runs = [e for e in handler(twin, DR, {"action": "status"})["executions"] if e["action"] == "reconcile"]
    earlier = [e for e in runs if e["id"] != automatic["id"]]
    assert {e["outcome"] for e in earlier} <= {"partial", "waiting"}
    assert any(e["outcome"] == "waiting" for e in earlier), [(e["outcome"], e["reasons"]) for e in runs]
    reapplied = [i for e in runs for i in e["report"].get("journal", {}).get("reapplied_ids", [])]
    assert sorted(reapplied) == sorted(ids), [(e["outcome"], e["report"]) for e in runs]
    journal, dr_dlq = automatic["report"]["journal"], automatic["report"]["dlq"][DR]
    assert journal["could_not"] == []
    assert sum(e["report"].get("dlq", {}).get(DR, {}).get("redriven", 0) for e in runs) == 1
    assert [m["reason"].split(":")[0] for m in dr_dlq["left"]] == ["invalid"]
    assert in_ledger(twin, DR, ids) == set(ids)
    assert eventually(lambda: in_ledger(twin, DR, [valid["transaction_id"]]), timeout=30)  # the redriven one
    control = handler(twin, DR, {"action": "status"})["control"]
    assert (control["reconciled_epoch"], control["epoch"], control["owed"]) == (1, 1, [])
    time.sleep(1.5 * 6)  # one and a half monitor periods at x10: it does not ask again
    assert [e["id"] for e in reconciled()] == [automatic["id"]]

    refused = run(twin_dir, "reconcile", "--region", PRIMARY)  # the old region is not the one to reconcile
    assert (refused["outcome"], refused["reasons"]) == ("refused", ["not_active"])
    again = run(twin_dir, "reconcile")  # an operator's run changes nothing
    assert (again["region"], again["outcome"]) == (DR, "completed"), again
    assert again["report"]["journal"]["reapplied"] == 0
    assert again["report"]["journal"]["already_held"] >= len(ids), again["report"]
    assert (again["report"]["dlq"][DR]["redriven"], len(again["report"]["dlq"][DR]["left"])) == (0, 1)
    listed = tandem(twin_dir, "executions", "--json")
    newest_first = [(e["action"], e["trigger"]) for e in json.loads(listed.stdout)]
    assert {e["trigger"] for e in runs} == {"monitor"}  # the automatic run, and any partial one before it
    assert newest_first[: len(runs) + 2] == [
        ("reconcile", "operator"),
        *[("reconcile", "monitor")] * len(runs),
        ("failover", "operator"),
    ]
