"""The drill: a seeded workload through the twin's primary region, consumed as Lambda would, then audited.

The twin's event source mapping (its SQS poller) hands batches to the unmodified handler; SQS's redrive
moves poison to the DLQ after maxReceiveCount receives. The drill only produces, waits until the queue is
empty, and audits through the same endpoints and database URI that `tandem twin status --json` prints.
It starts the twin (on a compressed clock, so retries after the visibility timeout take a fraction of a
second) when none is running, and stops what it started. On a twin that is already running, the audit
compares before/after snapshots, so earlier work in the twin does not count, and every run's transaction
ids are its own (the seed fixes the workload's shape; a per-run salt keeps two runs of one seed apart).

Two ways to end without PASSED, told apart by exit code: the audit found a problem (exit 1, full report)
or the drill could not run (:class:`DrillError`, exit 2, one line and whatever partial report exists).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg8000.native
from botocore.exceptions import BotoCoreError, ClientError

from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem.twin import launcher
from tandem.twin.control import call, default_state_dir
from tandem.twin.ownership import DRILL_LOCK, FileLock
from tandem.workload import Workload, generate

FUNCTION = "transaction_processor"
DRILL_SCALE = 600.0  # ten emulated minutes per real second: a 190 s visibility timeout passes in 0.3 s
MAX_IN_FLIGHT = 50  # producer back-pressure: keep the queue short, as a consumer that keeps up does
PROGRESS_EVERY = 5.0  # real seconds between progress lines while waiting
#: What can break a drill from outside its audit: an emulator or database gone (an outage), a twin gone.
RUN_ERRORS = (BotoCoreError, ClientError, pg8000.native.Error, OSError, RuntimeError, TimeoutError)

Progress = Callable[[str], None]


class DrillError(RuntimeError):
    """The drill could not run to its audit; ``report_path`` holds the partial report, when one was written."""

    def __init__(self, message: str, report_path: Path | None = None) -> None:
        super().__init__(message + (f"; partial report: {report_path}" if report_path else ""))
        self.report_path = report_path


@dataclass(frozen=True)
class DrillOptions:
    transactions: int = 200
    poison: int = 5
    duplicates: int = 20
    seed: int = 1
    report: Path | None = None
    state_dir: Path | None = None
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, not {self.timeout}")


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
        while _queue_depth(sqs, target.queue_url)[0] > MAX_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise TimeoutError("the twin is not consuming the queue (is the event source mapping enabled?)")
            time.sleep(0.02)
        resp = sqs.send_message_batch(
            QueueUrl=target.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {resp['Failed']}")


def wait_drained(target: Target, deadline: float, progress: Progress | None = None) -> None:
    """Wait until nothing is waiting or in flight; say how it goes every few seconds (retries can be slow)."""
    sqs, empty_checks, next_note = target.client("sqs"), 0, time.monotonic() + PROGRESS_EVERY
    while time.monotonic() < deadline:
        visible, in_flight = _queue_depth(sqs, target.queue_url)
        empty_checks = empty_checks + 1 if visible + in_flight == 0 else 0
        if empty_checks >= 3:
            return
        if progress is not None and time.monotonic() >= next_note:
            progress(f"waiting for the queue to drain: {visible} waiting, {in_flight} in flight (retries)")
            next_note = time.monotonic() + PROGRESS_EVERY
        time.sleep(0.05)
    raise TimeoutError("the queue was not drained in time")


def _queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def dead_letter_seconds(target: Target, clock_scale: float) -> float:
    """Real seconds a poison message needs to reach the DLQ on this twin: maxReceiveCount visibility timeouts."""
    attrs = target.client("sqs").get_queue_attributes(
        QueueUrl=target.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
    )["Attributes"]
    receives = int(json.loads(attrs.get("RedrivePolicy", "{}")).get("maxReceiveCount", 1))
    return receives * int(attrs["VisibilityTimeout"]) / clock_scale


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
        migrated = _table_exists(conn, "ledger_transaction") and _table_exists(conn, "account_balance")
        from_rows = {
            (str(a), str(c).strip()): int(b)
            for a, c, b in conn.run(
                "SELECT account_id, currency, sum(delta) FROM ("
                " SELECT account_id, currency, -amount_minor AS delta FROM ledger_transaction"
                " UNION ALL SELECT counterparty_id, currency, amount_minor FROM ledger_transaction) legs"
                " GROUP BY 1, 2"
            )
            or []
        } if migrated else {}  # fmt: skip
        currency_sums = {
            str(c).strip(): int(s)
            for c, s in conn.run("SELECT currency, sum(balance_minor) FROM account_balance GROUP BY 1") or []
        } if migrated else {}  # fmt: skip
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


def _table_exists(conn: pg8000.native.Connection, table: str) -> bool:
    """The ledger's tables appear with the first batch that has a valid transaction (the processor migrates)."""
    return bool((conn.run("SELECT to_regclass(:t) IS NOT NULL", t=table) or [[False]])[0][0])


def _ledger_ids(conn: pg8000.native.Connection) -> set[str]:
    if not _table_exists(conn, "ledger_transaction"):
        return set()
    return {str(r[0]) for r in conn.run("SELECT CAST(transaction_id AS text) FROM ledger_transaction") or []}


def _balances(conn: pg8000.native.Connection) -> dict[tuple[str, str], int]:
    if not _table_exists(conn, "account_balance"):
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


def report_destination(requested: Path | None, run_id: str) -> Path:
    """Where the report goes, checked writable *before* the drill runs (a result is never lost at the end).

    Default names carry the time and the run id, so two drills never write the same file.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = requested or Path("reports") / f"drill-{stamp}-{run_id[:8]}.json"
    if path.is_dir():
        raise DrillError(f"--report {path} is a directory; give a file path")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise DrillError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink()
    return path


def run(options: DrillOptions, progress: Progress | None = None) -> tuple[dict[str, Any], Path]:
    """Run the drill and write its report; DrillError when it could not run (with a partial report)."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    wl = generate(options.transactions, options.poison, options.duplicates, options.seed, salt=int(run_id, 16))
    report_path = report_destination(options.report, run_id)
    state_dir = options.state_dir or default_state_dir()
    drill_lock = FileLock(state_dir / DRILL_LOCK)
    if not drill_lock.acquire():
        drill_lock.close()
        raise DrillError(f"another drill (pid {drill_lock.holder()}) is running on the twin in {state_dir}")
    drill_lock.record_holder(os.getpid())
    bodies = wl.messages(random.Random(options.seed + 1))
    report: dict[str, Any] = {
        "drill": "twin, primary region",
        "run_id": run_id,
        "options": {
            "transactions": options.transactions, "poison": options.poison, "duplicates": options.duplicates,
            "seed": options.seed,
        },
        "workload": {
            "sent": len(bodies), "valid": len(wl.valid), "poison": len(wl.poison), "duplicates": len(wl.duplicates),
        },
    }  # fmt: skip
    stage = "starting the twin"
    try:
        with launcher.ensure_running(state_dir, scale=DRILL_SCALE) as started_twin:
            stage = "reading the twin's status"
            status = call(state_dir, "GET", "/status")
            target = Target.primary_of(status, state_dir)
            scale = float(status["clock"]["scale"])
            report["twin"] = {
                "region": target.region, "started_by_drill": started_twin, "clock_scale": scale,
                "state_dir": str(state_dir),
            }  # fmt: skip
            deadline = time.monotonic() + options.timeout
            stage = "checking the twin's clock"
            if wl.poison:
                needed = dead_letter_seconds(target, scale)
                if needed > options.timeout:
                    raise DrillError(
                        f"the running twin's clock is x{scale:g}: a poison message needs {needed:.0f} s to reach "
                        f"the DLQ, more than the drill's {options.timeout:.0f} s; stop it (`tandem twin down`) so "
                        f"the drill starts its own at x{DRILL_SCALE:g}, or start it with "
                        f"`tandem twin up --scale {DRILL_SCALE:g}`"
                    )
            stage = "taking what earlier runs left in the DLQ"
            leftover_dlq = take_dlq(target)
            before = snapshot(target)
            stage = "sending the workload"
            produce(target, bodies, deadline)
            stage = "waiting for the queue to drain"
            wait_drained(target, deadline, progress)
            stage = "auditing"
            dlq = take_dlq(target)
            reports = function_reports(target, before.log_offset)
            outcome = audit(target, wl, before, reports["TransactionsCommitted"], dlq)
    except (DrillError, *RUN_ERRORS) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.update(passed=False, completed=False, error={"stage": stage, "message": message})
        report["wall_seconds"] = round(time.monotonic() - started, 3)
        _write(report_path, report)
        raise DrillError(f"the drill could not run ({stage}): {message}", report_path) from None
    finally:
        drill_lock.close()
    report.update(outcome)
    report["processing"] = {"invocations": reports["invocations"], "dlq_left_from_earlier": len(leftover_dlq)}
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    report["function_log"] = str(target.function_log)
    report["completed"] = True
    report["passed"] = all(outcome["invariants"].values())
    _write(report_path, report)
    return report, report_path


def _write(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


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
