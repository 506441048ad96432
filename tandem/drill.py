"""The drill: a seeded workload through the twin's primary region, consumed as Lambda would, then audited.

The twin's event source mapping (its SQS poller) hands batches to the unmodified handler; SQS's redrive
moves poison to the DLQ after maxReceiveCount receives. The drill only produces, waits until the queue is
empty, and audits through the same endpoints and database URI that `tandem twin status --json` prints.
It starts the twin (on a compressed clock, so retries after the visibility timeout take a fraction of a
second) when none is running, and stops what it started. On a twin that is already running, the audit
compares before/after snapshots, so earlier work in the twin does not count.
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

from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem.twin import launcher
from tandem.twin.control import call, default_state_dir
from tandem.workload import Workload, generate

FUNCTION = "transaction_processor"
DRILL_SCALE = 600.0  # ten emulated minutes per real second: a 190 s visibility timeout passes in 0.3 s
MAX_IN_FLIGHT = 50  # producer back-pressure: keep the queue short, as a consumer that keeps up does


@dataclass(frozen=True)
class DrillOptions:
    transactions: int = 200
    poison: int = 5
    duplicates: int = 20
    seed: int = 1
    report: Path | None = None
    state_dir: Path | None = None
    timeout: float = 600.0


@dataclass
class Target:
    """One region of the twin, reached the way any client would: API endpoint and database URI."""

    region: str
    endpoint: str
    postgres: str
    queue_url: str
    dlq_url: str
    table: str
    bucket: str
    function_log: Path

    @classmethod
    def primary_of(cls, status: dict[str, Any], state_dir: Path) -> Target:
        region, info = next((r, i) for r, i in status["regions"].items() if i["role"] == "primary")
        res = info["resources"]
        return cls(
            region, info["endpoint"], info["postgres"], res["queue_url"], res["dlq_url"], res["ledger_table"],
            res["archive_bucket"], state_dir / f"{FUNCTION}-{region}.log",
        )  # fmt: skip

    def client(self, service: str) -> Any:
        return emulator_client(service, self.region, self.endpoint)

    def ledger(self) -> pg8000.native.Connection:
        return connect_uri(self.postgres)


@dataclass(frozen=True)
class Snapshot:
    """What the ledger and the function had done before the drill, so a reused twin audits cleanly."""

    ledger_ids: frozenset[str]
    balances: dict[tuple[str, str], int]
    log_offset: int


def snapshot(target: Target) -> Snapshot:
    conn = target.ledger()
    try:
        ids = frozenset(_ledger_ids(conn))
        balances = _balances(conn)
    finally:
        conn.close()
    offset = target.function_log.stat().st_size if target.function_log.exists() else 0
    return Snapshot(ids, balances, offset)


def produce(target: Target, bodies: list[str], deadline: float) -> None:
    """Send every body in batches of 10, never letting more than MAX_IN_FLIGHT wait in the queue."""
    sqs = target.client("sqs")
    for i in range(0, len(bodies), 10):
        while _in_queue(sqs, target.queue_url) > MAX_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise TimeoutError("the twin is not consuming the queue (is the event source mapping enabled?)")
            time.sleep(0.02)
        resp = sqs.send_message_batch(
            QueueUrl=target.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {resp['Failed']}")


def wait_drained(target: Target, deadline: float) -> None:
    sqs, empty_checks = target.client("sqs"), 0
    while time.monotonic() < deadline:
        empty_checks = empty_checks + 1 if _in_queue(sqs, target.queue_url, in_flight=True) == 0 else 0
        if empty_checks >= 3:
            return
        time.sleep(0.05)
    raise TimeoutError("the queue was not drained in time")


def _in_queue(sqs: Any, url: str, in_flight: bool = False) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]) + (int(attrs[names[1]]) if in_flight else 0)


def take_dlq(target: Target) -> list[str]:
    """Receive and delete everything in the DLQ (what a drill leaves there is its own poison)."""
    sqs = target.client("sqs")
    bodies: list[str] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=target.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            return bodies
        bodies += [m["Body"] for m in msgs]
        sqs.delete_message_batch(
            QueueUrl=target.dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


def function_reports(target: Target, offset: int) -> dict[str, int]:
    """Sums of the metrics the function emitted (EMF lines in its log) since ``offset``."""
    totals = {"TransactionsCommitted": 0.0, "invocations": 0.0}
    if not target.function_log.exists():
        return {k: 0 for k in totals}
    with open(target.function_log, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        for line in f:
            if '"_aws"' not in line:
                continue
            with contextlib.suppress(json.JSONDecodeError):
                doc = json.loads(line)
                totals["TransactionsCommitted"] += sum(doc.get("TransactionsCommitted", [0]))
                totals["invocations"] += 1
    return {k: int(v) for k, v in totals.items()}


def audit(target: Target, wl: Workload, before: Snapshot, committed_metric: int, dlq: list[str]) -> dict[str, Any]:
    conn = target.ledger()
    try:
        ledger_ids = _ledger_ids(conn)
        balances = _balances(conn)
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
    new_ids = ledger_ids - before.ledger_ids
    committed = len(valid_ids & ledger_ids)
    lost = sorted(valid_ids - ledger_ids)
    delta = {k: balances.get(k, 0) - before.balances.get(k, 0) for k in balances.keys() | before.balances.keys()}
    status_items = _status_ids(target, valid_ids)
    journaled = _journal_ids(target, valid_ids)
    invariants = {
        "committed_equals_valid": committed == len(valid_ids) and new_ids == valid_ids,
        "no_duplicates_applied": committed_metric == len(new_ids),
        "rejected_equals_poison": sorted(dlq) == sorted(wl.poison),
        "nothing_lost": not lost,
        "balances_equal_applied_transfers": _nonzero(balances) == _nonzero(from_rows),
        "currency_sums_zero": all(v == 0 for v in currency_sums.values()),
        "balances_match_workload": _nonzero(delta) == _nonzero(wl.expected_balances()),
        "status_recorded_for_every_commit": status_items == valid_ids & ledger_ids,
        "journal_holds_every_commit": valid_ids & ledger_ids <= journaled,
    }
    return {
        "result": {
            "committed": committed,
            "duplicates_applied": max(0, committed_metric - len(new_ids)),
            "rejected": len(dlq),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "ledger_rows_added": len(new_ids),
            "status_items": len(status_items),
            "journaled": len(journaled),
            "accounts": len(balances),
        },
        "invariants": invariants,
    }


def _ledger_ids(conn: pg8000.native.Connection) -> set[str]:
    if not (conn.run("SELECT to_regclass('ledger_transaction') IS NOT NULL") or [[False]])[0][0]:
        return set()
    return {str(r[0]) for r in conn.run("SELECT CAST(transaction_id AS text) FROM ledger_transaction") or []}


def _balances(conn: pg8000.native.Connection) -> dict[tuple[str, str], int]:
    if not (conn.run("SELECT to_regclass('account_balance') IS NOT NULL") or [[False]])[0][0]:
        return {}
    rows = conn.run("SELECT account_id, currency, balance_minor FROM account_balance") or []
    return {(str(a), str(c).strip()): int(b) for a, c, b in rows}


def _nonzero(balances: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: v for k, v in balances.items() if v != 0}


def _status_ids(target: Target, ids: set[str]) -> set[str]:
    ddb, found, wanted = target.client("dynamodb"), set(), sorted(ids)
    for i in range(0, len(wanted), 100):
        keys = [{"pk": {"S": f"TXN#{t}"}, "sk": {"S": "STATUS"}} for t in wanted[i : i + 100]]
        request: dict[str, Any] = {target.table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            resp = ddb.batch_get_item(RequestItems=request)
            found |= {item["pk"]["S"][4:] for item in resp["Responses"].get(target.table, [])}
            request = resp.get("UnprocessedKeys") or {}
    return found


def _journal_ids(target: Target, ids: set[str]) -> set[str]:
    s3, found = target.client("s3"), set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix="archive/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=target.bucket, Key=obj["Key"])["Body"].read().decode()
            found |= {json.loads(line)["transaction"]["transaction_id"] for line in body.splitlines() if line}
    return found & ids


def run(options: DrillOptions) -> tuple[dict[str, Any], Path]:
    started = time.monotonic()
    wl = generate(options.transactions, options.poison, options.duplicates, options.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_path = options.report or Path("reports") / f"drill-{stamp}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    state_dir = options.state_dir or default_state_dir()
    with launcher.ensure_running(state_dir, scale=DRILL_SCALE) as started_twin:
        status = call(state_dir, "GET", "/status")
        target = Target.primary_of(status, state_dir)
        leftover_dlq = take_dlq(target)
        before = snapshot(target)
        deadline = time.monotonic() + options.timeout
        bodies = wl.messages(random.Random(options.seed + 1))
        produce(target, bodies, deadline)
        wait_drained(target, deadline)
        dlq = take_dlq(target)
        reports = function_reports(target, before.log_offset)
        outcome = audit(target, wl, before, reports["TransactionsCommitted"], dlq)
    report = {
        "drill": "twin, primary region",
        "options": {
            "transactions": options.transactions, "poison": options.poison, "duplicates": options.duplicates,
            "seed": options.seed,
        },
        "workload": {
            "sent": len(bodies), "valid": len(wl.valid), "poison": len(wl.poison), "duplicates": len(wl.duplicates),
        },
        **outcome,
        "processing": {"invocations": reports["invocations"], "dlq_left_from_earlier": len(leftover_dlq)},
        "twin": {
            "region": target.region, "started_by_drill": started_twin, "clock_scale": status["clock"]["scale"],
            "state_dir": str(state_dir),
        },
        "wall_seconds": round(time.monotonic() - started, 3),
        "function_log": str(target.function_log),
    }  # fmt: skip
    report["passed"] = all(outcome["invariants"].values())
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report, report_path


def summary(report: dict[str, Any], path: Path) -> str:
    w, r, twin = report["workload"], report["result"], report["twin"]
    lines = [
        f"drill report: {path}",
        f"twin region {twin['region']} (clock x{twin['clock_scale']:g},"
        f" {'started by the drill' if twin['started_by_drill'] else 'already running'})",
        f"sent {w['sent']} messages: {w['valid']} valid, {w['poison']} poison, {w['duplicates']} duplicates",
        f"committed {r['committed']}, duplicates applied {r['duplicates_applied']}, rejected to DLQ {r['rejected']},"
        f" lost {r['lost']}  ({report['processing']['invocations']} invocations, {report['wall_seconds']} s)",
    ]
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in report["invariants"].items()]
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
