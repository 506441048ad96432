"""One bad message never takes valid ones down with it (issue 7), proven through a real SQS queue on the twin.

The twin's event source mapping polls the queue and hands batches to the unmodified handler; SQS dead-letters
a message after maxReceiveCount (5) receives, which the x600 clock makes quick. Each test sends its own
accounts, so it audits only its own work.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem_core.archive import REFUSED
from tests.conftest import eventually as shared_eventually
from tests.conftest import transfer
from tests.twin.conftest import aws, pg

PRIMARY = "us-east-1"
FN = "transaction_processor"
PATIENCE = 120.0  # seconds; a wait, not an assertion on speed (two cores, tests running next door)


def eventually(check: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    return shared_eventually(check, timeout, interval=0.1)


def send(twin: dict[str, Any], bodies: list[str]) -> list[str]:
    """One send_message_batch; the SQS message ids, in order."""
    sqs = aws(twin, PRIMARY, "sqs")
    queue = twin["regions"][PRIMARY]["resources"]["queue_url"]
    entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    sent = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    assert not sent.get("Failed")
    by_id = {s["Id"]: s["MessageId"] for s in sent["Successful"]}
    return [by_id[str(i)] for i in range(len(bodies))]


def drained(twin: dict[str, Any]) -> bool:
    sqs = aws(twin, PRIMARY, "sqs")
    attrs = sqs.get_queue_attributes(
        QueueUrl=twin["regions"][PRIMARY]["resources"]["queue_url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return bool(attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0")


def take_dlq(twin: dict[str, Any]) -> dict[str, str]:
    """Everything in the DLQ (message id -> body), deleted as it is taken so other tests start clean."""
    sqs = aws(twin, PRIMARY, "sqs")
    dlq = twin["regions"][PRIMARY]["resources"]["dlq_url"]
    taken: dict[str, str] = {}
    while got := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        for m in got:
            taken[m["MessageId"]] = m["Body"]
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
    return taken


def ledger_message_ids(twin: dict[str, Any], account: str) -> set[str]:
    conn = pg(twin, PRIMARY)
    try:
        rows = conn.run("SELECT message_id FROM ledger_transaction WHERE account_id = :a", a=account) or []
    finally:
        conn.close()
    return {str(r[0]) for r in rows}


def rejections(twin_dir: Path, message_id: str) -> list[dict[str, Any]]:
    """The function's 'message rejected' log lines for one message (correlation id = SQS message id)."""
    log = twin_dir / f"{FN}-{PRIMARY}.log"
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if message_id in line and "{" in line:
            record = json.loads(line[line.index("{") :])
            if record.get("message") == "message rejected" and record.get("correlation_id") == message_id:
                out.append(record)
    return out


def journal_lines_of(twin: dict[str, Any], message_id: str) -> list[dict[str, Any]]:
    """Every journal line, in every archive object, that carries this message."""
    s3 = aws(twin, PRIMARY, "s3")
    bucket = twin["regions"][PRIMARY]["resources"]["archive_bucket"]
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="archive/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            found += [line for line in map(json.loads, body.splitlines()) if line["message_id"] == message_id]
    return found


def dead_letters(twin: dict[str, Any], expected: str) -> dict[str, str]:
    """Take the DLQ until ``expected`` has arrived (and then what else is there): message id -> body."""
    taken: dict[str, str] = {}
    deadline = time.monotonic() + PATIENCE
    while expected not in taken and time.monotonic() < deadline:
        taken |= take_dlq(twin)
    return taken | take_dlq(twin)


def test_nine_valid_and_one_hostile_message_in_one_batch(twin: dict[str, Any], twin_dir: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b = f"acc-{tag}-a", f"acc-{tag}-b"
    valid = [json.dumps(transfer(a, b)) for _ in range(9)]
    hostile = transfer(a, b)
    hostile["transaction_id"] += "\n"  # passed `^...$`, then PostgreSQL refused the uuid and failed all ten
    ids = send(twin, [*valid[:5], json.dumps(hostile), *valid[5:]])
    bad = ids[5]

    assert eventually(lambda: drained(twin) and len(ledger_message_ids(twin, a)) == 9)
    assert ledger_message_ids(twin, a) == set(ids) - {bad}
    assert dead_letters(twin, bad) == {bad: json.dumps(hostile)}  # no valid message went down with it
    assert {r["reason"] for r in rejections(twin_dir, bad)} == {
        "invalid: transaction_id: contains a control or format character (U+000A control at position 36)"
    }
    assert journal_lines_of(twin, bad) == []  # never journaled, so reconciliation cannot replay it


def test_a_valid_message_the_ledger_refuses_fails_alone(twin: dict[str, Any], twin_dir: Path) -> None:
    """Validation cannot know an account's balance: a credit that would take it past bigint passes validation."""
    tag = uuid.uuid4().hex[:8]
    a, b, whale = f"acc-{tag}-a", f"acc-{tag}-b", f"acc-{tag}-whale"
    conn = pg(twin, PRIMARY)
    try:
        conn.run("INSERT INTO account_balance VALUES (:w, 'USD', 9223372036854775000)", w=whale)
    finally:
        conn.close()
    refused = transfer(a, whale, amount="50.00")
    ids = send(twin, [json.dumps(transfer(a, b)) for _ in range(4)] + [json.dumps(refused)])
    bad = ids[4]

    assert eventually(lambda: drained(twin) and len(ledger_message_ids(twin, a)) == 4)
    assert ledger_message_ids(twin, a) == set(ids) - {bad}
    assert dead_letters(twin, bad) == {bad: json.dumps(refused)}
    reasons = rejections(twin_dir, bad)
    assert len(reasons) == 5  # every receive up to maxReceiveCount, each time refused alone
    assert {r["reason"] for r in reasons} == {"rejected_by_ledger: bigint out of range (SQLSTATE 22003)"}
    lines = journal_lines_of(twin, bad)
    assert lines  # journaled before the ledger spoke, in the first batch's object and in each retry's
    assert {line.get(REFUSED) for line in lines} == {"bigint out of range (SQLSTATE 22003)"}
    table = twin["regions"][PRIMARY]["resources"]["ledger_table"]
    status = aws(twin, PRIMARY, "dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"TXN#{refused['transaction_id']}"}, "sk": {"S": "STATUS"}}
    )
    assert "Item" not in status
    conn = pg(twin, PRIMARY)
    try:
        assert conn.run("SELECT balance_minor FROM account_balance WHERE account_id = :w", w=whale) == [
            [9223372036854775000]
        ]
    finally:
        conn.close()
