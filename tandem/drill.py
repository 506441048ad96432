"""The drill: a seeded workload through SQS to the real handler, drained as Lambda would, then audited.

Single-region for now (the twin and failover extend it). The event source mapping is emulated the way
Lambda runs it: receive up to 10 messages, invoke, delete what succeeded; failed records (and every
record of a failed invocation) become visible again - at once, since the drill compresses the
visibility timeout - and SQS moves a message to the DLQ after maxReceiveCount receives.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg8000.native

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import LocalRegion, function_environment, local_region
from tandem.workload import Workload, generate

FUNCTION = "transaction_processor"
SEND_PER_POLL = 10


@dataclass(frozen=True)
class DrillOptions:
    transactions: int = 200
    poison: int = 5
    duplicates: int = 20
    seed: int = 1
    region: str = "us-east-1"
    report: Path | None = None


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS poller delivers for these received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def send(local: LocalRegion, bodies: list[str]) -> None:
    sqs = local.client("sqs")
    for i in range(0, len(bodies), 10):
        chunk = bodies[i : i + 10]
        resp = sqs.send_message_batch(
            QueueUrl=local.resources.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(chunk)],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {resp['Failed']}")


@dataclass
class DrainStats:
    invocations: int = 0
    failed_invocations: int = 0
    record_failures: int = 0


def drain(local: LocalRegion, handler: Any, bodies: list[str], max_seconds: float = 600) -> DrainStats:
    """Produce and consume together until everything is sent and the queue is empty.

    The producer sends ``SEND_PER_POLL`` messages per poll, a steady stream the consumer keeps up with
    (as in production, and it keeps moto's per-receive queue scan short). The consumer polls like
    Lambda's event source mapping; DLQ moves after maxReceiveCount are SQS's own.
    """
    sqs, res = local.client("sqs"), local.resources
    stats = DrainStats()
    deadline = time.monotonic() + max_seconds
    idle = 0
    unsent = list(bodies)
    while time.monotonic() < deadline:
        if unsent:
            send(local, unsent[:SEND_PER_POLL])
            del unsent[:SEND_PER_POLL]
        msgs = sqs.receive_message(
            QueueUrl=res.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
            MessageAttributeNames=["All"], WaitTimeSeconds=0,
        ).get("Messages", [])  # fmt: skip
        if not msgs:
            attrs = sqs.get_queue_attributes(
                QueueUrl=res.queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            in_queue = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            if in_queue == 0 and not unsent:
                idle += 1
                if idle >= 2:
                    return stats
            time.sleep(0.05)
            continue
        idle = 0
        stats.invocations += 1
        event = sqs_event(msgs, res.queue_arn, local.region)
        context = LambdaContext(function_name=f"tandem-{FUNCTION}", region=local.region)
        try:
            response = handler(event, context)
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        except Exception:
            stats.failed_invocations += 1
            failed = {m["MessageId"] for m in msgs}
        stats.record_failures += len(failed)
        done = [m for m in msgs if m["MessageId"] not in failed]
        retry = [m for m in msgs if m["MessageId"] in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=res.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        if retry:  # compressed clock: the visibility timeout elapses now
            sqs.change_message_visibility_batch(
                QueueUrl=res.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(retry)
                ],
            )
    raise TimeoutError(f"queue not drained within {max_seconds} s")


def dlq_bodies(local: LocalRegion) -> list[str]:
    sqs = local.client("sqs")
    bodies: list[str] = []
    seen: set[str] = set()
    while True:
        msgs = sqs.receive_message(
            QueueUrl=local.resources.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=300, WaitTimeSeconds=0
        ).get("Messages", [])
        fresh = [m for m in msgs if m["MessageId"] not in seen]
        if not fresh:
            return bodies
        for m in fresh:
            seen.add(m["MessageId"])
            bodies.append(m["Body"])


def committed_reported(function_log: Path) -> int:
    """Sum of the TransactionsCommitted metric the function emitted (EMF lines in its output)."""
    total = 0.0
    for line in function_log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"_aws"' not in line:
            continue
        with contextlib.suppress(json.JSONDecodeError):
            total += sum(json.loads(line).get("TransactionsCommitted", [0]))
    return int(total)


def audit(local: LocalRegion, wl: Workload, committed_metric: int, dlq: list[str]) -> dict[str, Any]:
    pg = local.postgres
    conn = pg8000.native.Connection(
        user=pg.user, password=pg.password, host="127.0.0.1", port=pg.port, database=pg.database
    )
    try:
        rows = conn.run("SELECT CAST(transaction_id AS text) FROM ledger_transaction") or []
        in_ledger = {str(r[0]) for r in rows}
        balances = {
            (str(a), str(c).strip()): int(b)
            for a, c, b in conn.run("SELECT account_id, currency, balance_minor FROM account_balance") or []
        }
        from_rows = {
            (str(a), str(c).strip()): int(b)
            for a, c, b in conn.run(
                "SELECT account_id, currency, sum(delta) FROM ("
                " SELECT account_id, currency, -amount_minor AS delta FROM ledger_transaction"
                " UNION ALL SELECT counterparty_id, currency, amount_minor FROM ledger_transaction) legs"
                " GROUP BY 1, 2"
            )
            or []
        }
        currency_sums = {
            str(c).strip(): int(s)
            for c, s in conn.run("SELECT currency, sum(balance_minor) FROM account_balance GROUP BY 1") or []
        }
    finally:
        conn.close()

    valid_ids = set(wl.valid)
    committed = len(valid_ids & in_ledger)
    lost = sorted(valid_ids - in_ledger)
    status_items = _count_status(local)
    journaled = _journal_ids(local)
    invariants = {
        "committed_equals_valid": committed == len(valid_ids) and len(in_ledger) == len(valid_ids),
        "no_duplicates_applied": committed_metric - len(in_ledger) == 0,
        "rejected_equals_poison": sorted(dlq) == sorted(wl.poison),
        "nothing_lost": not lost,
        "balances_equal_applied_transfers": _nonzero(balances) == _nonzero(from_rows),
        "currency_sums_zero": all(v == 0 for v in currency_sums.values()),
        "balances_match_workload": _nonzero(balances) == _nonzero(wl.expected_balances()),
        "status_recorded_for_every_commit": status_items == in_ledger,
        "journal_holds_every_commit": in_ledger <= journaled,
    }
    return {
        "result": {
            "committed": committed,
            "duplicates_applied": max(0, committed_metric - len(in_ledger)),
            "rejected": len(dlq),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "ledger_rows": len(in_ledger),
            "status_items": len(status_items),
            "journaled": len(journaled),
            "accounts": len(balances),
        },
        "invariants": invariants,
    }


def _nonzero(balances: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: v for k, v in balances.items() if v != 0}


def _count_status(local: LocalRegion) -> set[str]:
    ids: set[str] = set()
    for page in local.client("dynamodb").get_paginator("scan").paginate(TableName=local.resources.table):
        for item in page["Items"]:
            pk = item["pk"]["S"]
            if pk.startswith("TXN#") and item["sk"]["S"] == "STATUS":
                ids.add(pk[4:])
    return ids


def _journal_ids(local: LocalRegion) -> set[str]:
    s3, ids = local.client("s3"), set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=local.resources.bucket, Prefix="archive/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=local.resources.bucket, Key=obj["Key"])["Body"].read().decode()
            ids |= {json.loads(line)["transaction"]["transaction_id"] for line in body.splitlines() if line}
    return ids


def run(options: DrillOptions) -> tuple[dict[str, Any], Path]:
    started = time.monotonic()
    wl = generate(options.transactions, options.poison, options.duplicates, options.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_path = options.report or Path("reports") / f"drill-{stamp}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    function_log = report_path.with_suffix(".function.log")
    with (
        local_region(options.region) as local,
        function_environment(local.function_env(FUNCTION)),
        open(function_log, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        handler = load_handler(FUNCTION)
        bodies = wl.messages(random.Random(options.seed + 1))
        stats = drain(local, handler, bodies)
        dlq = dlq_bodies(local)
        log.flush()
        outcome = audit(local, wl, committed_reported(function_log), dlq)
    report = {
        "drill": "single-region",
        "options": {
            "transactions": options.transactions, "poison": options.poison, "duplicates": options.duplicates,
            "seed": options.seed, "region": options.region,
        },
        "workload": {
            "sent": len(bodies), "valid": len(wl.valid), "poison": len(wl.poison), "duplicates": len(wl.duplicates),
        },
        **outcome,
        "processing": {
            "invocations": stats.invocations,
            "failed_invocations": stats.failed_invocations,
            "record_failures": stats.record_failures,
            "max_receive_count": local.resources.max_receive_count,
        },
        "wall_seconds": round(time.monotonic() - started, 3),
        "function_log": str(function_log),
    }  # fmt: skip
    report["passed"] = all(outcome["invariants"].values())
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report, report_path


def summary(report: dict[str, Any], path: Path) -> str:
    w, r = report["workload"], report["result"]
    lines = [
        f"drill report: {path}",
        f"sent {w['sent']} messages: {w['valid']} valid, {w['poison']} poison, {w['duplicates']} duplicates",
        f"committed {r['committed']}, duplicates applied {r['duplicates_applied']}, rejected to DLQ {r['rejected']},"
        f" lost {r['lost']}  ({report['processing']['invocations']} invocations, {report['wall_seconds']} s)",
    ]
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in report["invariants"].items()]
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
