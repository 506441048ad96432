"""The drill's audit: what the region's data says happened to a workload, and whether it is right.

Everything is read from the data a client of the region can read (the ledger through its database URI; the
queue, the DLQ, the status items, the journal and CloudWatch through the region's endpoint), never from a
function's log. The status items and the journal are read through ``tandem_core``'s own key layout and
journal reader, so the audit asks exactly what lost-write reconciliation would ask. The balance checks are
the exception, on purpose: they recompute every balance in SQL from the ledger's rows, independent of the
code under test, since that code is what they check.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pg8000.native

from tandem.drill.workload import Workload
from tandem.lambda_runtime import name_in_arn
from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem_core.archive import PREFIX, Journal
from tandem_core.models import Transaction
from tandem_core.status import status_key

Account = tuple[str, str]  # (account id, currency): one balance
NOTE_AFTER = 5.0  # real seconds of waiting for CloudWatch before saying so


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

    @classmethod
    def primary_of(cls, status: dict[str, Any]) -> Target:
        """The primary region as `tandem twin status --json` describes it."""
        region, info = next((r, i) for r, i in status["regions"].items() if i["role"] == "primary")
        res = info["resources"]
        return cls(
            region, info["endpoint"], info["postgres"], res["queue_url"], res["dlq_url"], res["ledger_table"],
            res["archive_bucket"],
        )  # fmt: skip

    def client(self, service: str) -> Any:
        return emulator_client(service, self.region, self.endpoint)

    def ledger(self) -> pg8000.native.Connection:
        return connect_uri(self.postgres)


@dataclass(frozen=True)
class LedgerState:
    """The ledger's rows and balances at one moment; taken before a drill, so a reused twin audits cleanly."""

    ids: frozenset[str]
    balances: dict[Account, int]
    legs: dict[Account, int]  # per account and currency: the sum of its legs over the ledger's rows

    def drift(self) -> dict[Account, int]:
        """Stored balance minus the sum of its legs: an effect the balances hold without (or beyond) its row."""
        keys = self.balances.keys() | self.legs.keys()
        return _nonzero({k: self.balances.get(k, 0) - self.legs.get(k, 0) for k in keys})

    def currency_sums(self) -> dict[str, int]:
        sums: dict[str, int] = {}
        for (_, currency), balance in self.balances.items():
            sums[currency] = sums.get(currency, 0) + balance
        return sums


def snapshot(target: Target) -> LedgerState:
    conn = target.ledger()
    try:
        return read_ledger(conn)
    finally:
        conn.close()


def read_ledger(conn: pg8000.native.Connection) -> LedgerState:
    """Rows, stored balances and each account's legs, in plain SQL over the ledger's tables.

    Deliberately not through ``tandem_core.ledger``: this is the independent check of what that code stored.
    Before the first valid batch the processor has not migrated yet, and there is nothing to read.
    """
    if not (_table_exists(conn, "ledger_transaction") and _table_exists(conn, "account_balance")):
        return LedgerState(frozenset(), {}, {})
    ids = frozenset(str(r[0]) for r in conn.run("SELECT CAST(transaction_id AS text) FROM ledger_transaction") or [])
    balances = {
        (str(a), str(c).strip()): int(b)
        for a, c, b in conn.run("SELECT account_id, currency, balance_minor FROM account_balance") or []
    }
    legs = {
        (str(a), str(c).strip()): int(s)
        for a, c, s in conn.run(
            "SELECT account_id, currency, sum(delta) FROM ("
            " SELECT account_id, currency, -amount_minor AS delta FROM ledger_transaction"
            " UNION ALL SELECT counterparty_id, currency, amount_minor FROM ledger_transaction) legs"
            " GROUP BY 1, 2"
        )
        or []
    }
    return LedgerState(ids, balances, legs)


def _table_exists(conn: pg8000.native.Connection, table: str) -> bool:
    return bool((conn.run("SELECT to_regclass(:t) IS NOT NULL", t=table) or [[False]])[0][0])


def _nonzero(balances: Mapping[Account, int]) -> dict[Account, int]:
    return {k: v for k, v in balances.items() if v != 0}


def _minus(a: Mapping[Account, int], b: Mapping[Account, int]) -> dict[Account, int]:
    return _nonzero({k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()})


@dataclass(frozen=True)
class Duplicates:
    """Transfers whose effect the balances hold more than once, and the drift that no transfer explains."""

    ids: list[str]
    unexplained: dict[Account, int]


def duplicates_applied(
    drift: Mapping[Account, int], transfers: Mapping[str, Transaction], in_ledger: Iterable[str]
) -> Duplicates:
    """Match balance drift against the transfers: a transfer applied once more than its ledger row leaves its
    debit account's drift at -amount and its credit account's at +amount, in its currency.

    Each transfer is taken off the drift for as long as both legs still hold it, largest amounts first (so a
    doubled large transfer is not explained away by smaller ones between the same accounts). A transfer
    counts as applied twice when its row plus what the drift holds of it make two or more applications. The
    matching is greedy: drift that no whole transfer explains is left in ``unexplained``, never guessed at.
    """
    residual, rows = dict(drift), set(in_ledger)
    extra: dict[str, int] = {}
    for tid, t in sorted(transfers.items(), key=lambda item: (-item[1].amount_minor, item[0])):
        debit, credit, amount = (t.account_id, t.currency), (t.counterparty_id, t.currency), t.amount_minor
        while residual.get(debit, 0) <= -amount and residual.get(credit, 0) >= amount:
            residual[debit] += amount
            residual[credit] -= amount
            extra[tid] = extra.get(tid, 0) + 1
    doubled = sorted(tid for tid, n in extra.items() if n + (tid in rows) >= 2)
    return Duplicates(doubled, _nonzero(residual))


def ledger_payloads(target: Target, ids: Iterable[str]) -> dict[str, str]:
    """The payload hash of each row the ledger holds among ``ids``, in plain SQL (the row is the truth)."""
    conn = target.ledger()
    try:
        rows = conn.run(
            "SELECT CAST(transaction_id AS text), CAST(payload_hash AS text) FROM ledger_transaction"
            " WHERE transaction_id = ANY(CAST(:i AS uuid[]))", i=sorted(ids),
        )  # fmt: skip
    finally:
        conn.close()
    return {str(t): str(h) for t, h in rows or []}


def status_items(target: Target, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The status item of each of ``ids`` that has one, looked up by tandem_core's status key."""
    ddb, names = target.client("dynamodb"), sorted(status_key(""))
    by_key = {_key_id(status_key(tid)): tid for tid in ids}
    wanted = sorted(by_key)
    found: dict[str, dict[str, Any]] = {}
    keys = [status_key(by_key[k]) for k in wanted]
    for i in range(0, len(keys), 100):
        request: dict[str, Any] = {target.table: {"Keys": keys[i : i + 100], "ConsistentRead": True}}
        while request:
            resp = ddb.batch_get_item(RequestItems=request)
            for item in resp["Responses"].get(target.table, []):
                found[by_key[_key_id({n: item[n] for n in names})]] = item
            request = resp.get("UnprocessedKeys") or {}
    return found


def status_mismatches(target: Target, committed: Iterable[str]) -> list[str]:
    """The committed transactions whose status item is missing or disagrees with the ledger's row (not
    COMMITTED, or another payload): after reconciliation there must be none."""
    ids = sorted(committed)
    rows, items = ledger_payloads(target, ids), status_items(target, ids)
    return [
        tid for tid in ids
        if (item := items.get(tid)) is None or item.get("status", {}).get("S") != "COMMITTED"
        or item.get("payload_hash", {}).get("S") != rows.get(tid)
    ]  # fmt: skip


def _key_id(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def journaled(target: Target, transfers: Mapping[str, Transaction]) -> set[str]:
    """The transfers that reconciliation could replay from the journal: a line not marked refused, same transfer.

    Reads every journal object (:meth:`Journal.replayable`, so refused lines are skipped as reconciliation
    skips them); the objects are read concurrently, as there is one per batch.
    """
    s3 = target.client("s3")
    journal = Journal(s3, target.bucket)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=PREFIX)
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    found: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for lines in pool.map(journal.replayable, keys):
            for line in lines:
                mine = transfers.get(str(line["transaction"].get("transaction_id")))
                if mine is not None and _identity(line) == mine.identity_hash:
                    found.add(mine.transaction_id)
    return found


def _identity(line: dict[str, Any]) -> str:
    """Which transfer a journal line carries, as the processor judges it (not the line's own claim): a retry
    that re-stamped ``created_at`` is the same transfer."""
    return Transaction.model_validate(line["transaction"]).identity_hash


def audit(target: Target, wl: Workload, before: LedgerState, dlq: list[str]) -> dict[str, Any]:
    """The result and the invariants of one drill: its workload against what the data holds now."""
    after = snapshot(target)
    transfers = wl.transfers()
    valid_ids = set(transfers)
    new_ids = after.ids - before.ids
    committed_ids = valid_ids & after.ids
    committed = {tid: transfers[tid] for tid in committed_ids}
    lost = sorted(valid_ids - after.ids)
    delta = _minus(after.balances, before.balances)
    drift = after.drift()
    # Only drift that appeared during this run is matched: damage earlier work left is not this workload's.
    duplicates = duplicates_applied(_minus(drift, before.drift()), transfers, after.ids)
    mismatched = status_mismatches(target, committed_ids)
    journal = journaled(target, committed)
    invariants = {
        "committed_equals_valid": len(committed_ids) == len(valid_ids) and new_ids == valid_ids,
        "no_duplicates_applied": not duplicates.ids,
        "rejected_equals_poison": sorted(dlq) == sorted(wl.poison),
        "nothing_lost": not lost,
        "balances_equal_applied_transfers": not drift,
        "currency_sums_zero": all(v == 0 for v in after.currency_sums().values()),
        "balances_match_workload": _nonzero(delta) == _nonzero(wl.expected_balances()),
        "status_equals_ledger": not mismatched,
        "journal_holds_every_commit": journal == committed_ids,
    }
    return {
        "result": {
            "committed": len(committed_ids),
            "duplicates_applied": len(duplicates.ids),
            "duplicate_ids": duplicates.ids[:20],
            "unexplained_drift": len(duplicates.unexplained),
            "rejected": len(dlq),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "ledger_rows_added": len(new_ids),
            "status_mismatches": len(mismatched),
            "status_mismatch_ids": mismatched[:20],
            "journaled": len(journal),
            "accounts": len(after.balances),
        },
        "invariants": invariants,
    }


def processor_invocations(
    target: Target, since: float, until: float, deadline: float, progress: Callable[[str], None] | None = None
) -> int:
    """How often Lambda ran the queue's function from twin time ``since`` to ``until``: the AWS/Lambda
    ``Invocations`` metric of every function mapped to the queue, summed over that window.

    ``since`` and ``until`` are whole emulated seconds (CloudWatch truncates a query's times to the second).
    The twin publishes, on each tick, the invocations made since the last one, and then samples the queues
    (AWS/SQS, every 60 emulated seconds); a queue sample stamped at or after ``until`` therefore proves that
    every invocation before ``until`` is in. Anything else that invokes those functions in the window (a
    `tandem invoke`, messages an earlier drill left in the queue) counts too. The wait for that sample is
    0.1 s on the drill's x600 clock, up to a minute on a twin running in real time (``progress`` says so).
    """
    arn = target.client("sqs").get_queue_attributes(QueueUrl=target.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    mappings = target.client("lambda").list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    names = sorted({name_in_arn(m["FunctionArn"]) for m in mappings})  # the mapping may invoke an alias
    cloudwatch = target.client("cloudwatch")
    marker = {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible"}
    queue = [{"Name": "QueueName", "Value": arn.rsplit(":", 1)[-1]}]
    note_at = time.monotonic() + NOTE_AFTER
    while not _sum(cloudwatch, marker, queue, until, until + 7 * 86400, "SampleCount"):
        if time.monotonic() > deadline:
            raise TimeoutError("the twin published no queue metrics after the drill (is its tick loop running?)")
        if progress is not None and time.monotonic() > note_at:
            progress("waiting for the twin's next CloudWatch samples to count invocations (every 60 s of twin time)")
            note_at = math.inf
        time.sleep(0.05)
    lam = {"Namespace": "AWS/Lambda", "MetricName": "Invocations"}
    return sum(int(_sum(cloudwatch, lam, [{"Name": "FunctionName", "Value": n}], since, until, "Sum")) for n in names)


def _sum(
    cloudwatch: Any, metric: dict[str, str], dims: list[dict[str, str]], start: float, end: float, stat: str
) -> float:
    """One statistic over [start, end) of emulated epoch seconds, in as few periods as CloudWatch allows."""
    period = 60 * max(1, math.ceil((end - start) / 60 / 1440))  # whole minutes, at most 1440 data points
    points = cloudwatch.get_metric_statistics(
        **metric, Dimensions=dims, StartTime=_instant(start), EndTime=_instant(end), Period=period, Statistics=[stat]
    )["Datapoints"]
    return float(sum(p[stat] for p in points))


def _instant(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
