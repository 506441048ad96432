"""The drill end to end on the twin: workload through SQS to the handler, Lambda's retry/DLQ, audit."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tandem.drill import DrillOptions, run
from tandem.drill.audit import LedgerState, Target, audit, duplicates_applied, processor_invocations, snapshot
from tandem.drill.queues import produce, take_dlq, twin_clock, wait_drained, window_start
from tandem.drill.workload import Workload, generate
from tandem.twin import launcher
from tandem.twin.control import call
from tandem_core.archive import PREFIX, REFUSED, Journal
from tandem_core.models import parse_transaction
from tandem_core.status import status_key
from tests.conftest import ROOT

pytestmark = pytest.mark.drill


def test_make_drill_command_line_starts_its_own_twin_and_stops_it(tmp_path: Path) -> None:
    """First in the module: before the module's twin starts, so two twins never share the cores."""
    report, state_dir = tmp_path / "cli.json", tmp_path / "twin"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(state_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--scenario", "steady", "--transactions", "30", "--poison", "2",
         "--duplicates", "5", "--seed", "11", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"drill report: {report}" in proc.stdout
    assert "PASSED" in proc.stdout
    assert json.loads(report.read_text())["twin"]["started_by_drill"] is True
    assert not launcher.is_running(state_dir)
    assert not (state_dir / "twin.json").exists()


def test_drill_report_holds_every_invariant(twin_dir: Path, tmp_path: Path) -> None:
    options = DrillOptions(transactions=120, poison=10, duplicates=25, seed=3, report=tmp_path / "r.json")
    report, path = run(DrillOptions(**{**options.__dict__, "state_dir": twin_dir}))
    assert path.exists()
    assert json.loads(path.read_text()) == report
    assert report["workload"] == {"sent": 155, "valid": 120, "poison": 10, "duplicates": 25}
    r = report["result"]
    assert (r["committed"], r["duplicates_applied"], r["rejected"], r["lost"]) == (120, 0, 10, 0)
    assert report["invariants"]
    assert all(report["invariants"].values())
    assert report["passed"] is True
    assert report["twin"]["started_by_drill"] is False
    assert "function_log" not in report
    # CloudWatch's Invocations: at least one batch of 10 per 10 messages, and each message is in at most
    # maxReceiveCount batches (poison is retried until redrive)
    assert 155 / 10 <= report["processing"]["invocations"] <= 155 * 5


def test_a_second_drill_on_the_same_twin_audits_only_its_own_work(twin_dir: Path, tmp_path: Path) -> None:
    report, _ = run(DrillOptions(transactions=40, poison=2, duplicates=5, seed=4, report=tmp_path / "a.json",
                                 state_dir=twin_dir))  # fmt: skip
    assert report["passed"] is True
    assert report["result"]["ledger_rows_added"] == 40


def test_the_same_seeded_drill_twice_on_one_twin_passes_both_times(twin_dir: Path, tmp_path: Path) -> None:
    """Each run salts its transaction ids, so a rerun of a seed is new work, not a "duplicate" of the last."""
    runs = [
        run(DrillOptions(transactions=20, poison=1, duplicates=3, seed=21, report=tmp_path / f"{n}.json",
                         state_dir=twin_dir))[0]
        for n in range(2)
    ]  # fmt: skip
    assert [r["passed"] for r in runs] == [True, True]
    assert [r["result"]["ledger_rows_added"] for r in runs] == [20, 20]
    assert runs[0]["run_id"] != runs[1]["run_id"]


def test_a_poison_only_drill_passes(twin_dir: Path, tmp_path: Path) -> None:
    """Nothing valid means nothing committed: the audit must not trip over an empty change (on the module's
    twin: starting one is the first test's; before the tests that tamper with the ledger, whose drift the
    audit of every later drill on this twin would rightly report)."""
    report = tmp_path / "poison.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(twin_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--scenario", "steady", "--transactions", "0", "--poison", "3",
         "--duplicates", "0", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    assert result["passed"] is True
    assert (result["result"]["committed"], result["result"]["rejected"]) == (0, 3)


def test_workload_is_reproducible_from_its_seed() -> None:
    a, b = generate(50, 5, 10, seed=9), generate(50, 5, 10, seed=9)
    assert a.valid == b.valid
    assert a.poison == b.poison
    assert generate(50, 5, 10, seed=10).valid != a.valid
    assert set(a.duplicates) <= set(a.valid.values())
    salted = generate(50, 5, 10, seed=9, salt=12345)
    assert set(salted.valid).isdisjoint(a.valid)
    assert [json.loads(v)["amount"] for v in salted.valid.values()] == [
        json.loads(v)["amount"] for v in a.valid.values()
    ]


def test_invocations_are_cloudwatchs_count_over_the_drills_window(twin_dir: Path) -> None:
    """One message at a time, drained before the next: exactly one invocation each, the last one included."""
    status = call(twin_dir, "GET", "/status")
    target, scale = Target.primary_of(status), float(status["clock"]["scale"])
    wl = generate(3, 0, 0, seed=12, salt=uuid.uuid4().int)
    deadline = time.monotonic() + 60
    since = window_start(twin_dir, scale)
    for body in wl.valid.values():
        produce(target, [body], deadline)
        wait_drained(target, deadline)
    until = math.floor(twin_clock(twin_dir)) + 1
    assert processor_invocations(target, since, until, deadline) == 3


def _drained(twin_dir: Path, seed: int) -> tuple[Target, Workload, LedgerState, list[str]]:
    """A small salted workload through the twin, drained: what the audit of one drill sees."""
    target = Target.primary_of(call(twin_dir, "GET", "/status"))
    wl = generate(30, 2, 5, seed=seed, salt=uuid.uuid4().int)
    take_dlq(target)
    before = snapshot(target)
    deadline = time.monotonic() + 120
    produce(target, wl.messages(random.Random(1)), deadline)
    wait_drained(target, deadline)
    return target, wl, before, take_dlq(target)


def _flipped(clean: dict[str, bool], tampered: dict[str, bool]) -> dict[str, bool]:
    """The invariants whose verdict the tampering changed (order-independent: earlier damage stays put)."""
    return {name: tampered[name] for name, ok in clean.items() if tampered[name] != ok}


def test_the_audit_catches_a_commit_whose_status_is_missing_or_disagrees_with_the_ledger(twin_dir: Path) -> None:
    target, wl, before, dlq = _drained(twin_dir, seed=6)
    clean = audit(target, wl, before, dlq=dlq)
    missing, other = list(wl.valid)[:2]
    ddb = target.client("dynamodb")
    ddb.delete_item(TableName=target.table, Key=status_key(missing))
    ddb.update_item(TableName=target.table, Key=status_key(other), UpdateExpression="SET payload_hash = :h",
                    ExpressionAttributeValues={":h": {"S": "0" * 64}})  # another payload than the row's  # fmt: skip
    tampered = audit(target, wl, before, dlq=dlq)
    assert _flipped(clean["invariants"], tampered["invariants"]) == {"status_equals_ledger": False}
    assert (clean["result"]["status_mismatches"], tampered["result"]["status_mismatches"]) == (0, 2)
    assert sorted(tampered["result"]["status_mismatch_ids"]) == sorted([missing, other])


def test_the_audit_catches_a_commit_that_reconciliation_would_not_replay(twin_dir: Path) -> None:
    """A journal line marked refused for a transaction the ledger holds: reconciliation would skip it."""
    target, wl, before, dlq = _drained(twin_dir, seed=7)
    clean = audit(target, wl, before, dlq=dlq)
    victim = next(iter(wl.valid))
    s3 = target.client("s3")
    journal = Journal(s3, target.bucket)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=target.bucket, Prefix=PREFIX).get("Contents", [])]
    marked = 0
    for key in keys:
        lines = journal.read(key)
        if any(line["transaction"]["transaction_id"] == victim for line in lines):
            for line in lines:
                if line["transaction"]["transaction_id"] == victim:
                    line[REFUSED] = "marked by the test"
                    marked += 1
            body = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
            s3.put_object(Bucket=target.bucket, Key=key, Body=body.encode())
    assert marked >= 1
    tampered = audit(target, wl, before, dlq=dlq)
    assert _flipped(clean["invariants"], tampered["invariants"]) == {"journal_holds_every_commit": False}
    assert (clean["result"]["journaled"], tampered["result"]["journaled"]) == (30, 29)


def test_the_audit_catches_a_double_application_and_a_lost_write(twin_dir: Path) -> None:
    """The invariants are not decoration: tamper with the ledger the way a bug would, and they fail."""
    target = Target.primary_of(call(twin_dir, "GET", "/status"))
    wl = generate(30, 2, 5, seed=5)
    take_dlq(target)
    before = snapshot(target)
    deadline = time.monotonic() + 120
    produce(target, wl.messages(random.Random(1)), deadline)
    wait_drained(target, deadline)
    dlq = take_dlq(target)
    clean = audit(target, wl, before, dlq=dlq)
    assert all(clean["invariants"].values())

    conn = target.ledger()
    victim = next(iter(wl.valid))
    conn.run(  # a second application of one transfer's effect, as a missing idempotency check would do
        "UPDATE account_balance b SET balance_minor = balance_minor + CASE WHEN b.account_id = t.counterparty_id"
        " THEN t.amount_minor ELSE -t.amount_minor END FROM ledger_transaction t"
        " WHERE t.transaction_id = CAST(:id AS uuid) AND b.currency = t.currency"
        " AND b.account_id IN (t.account_id, t.counterparty_id)",
        id=victim,
    )
    doubled = audit(target, wl, before, dlq=dlq)
    assert doubled["result"]["duplicates_applied"] == 1
    assert doubled["result"]["duplicate_ids"] == [victim]
    assert not doubled["invariants"]["no_duplicates_applied"]
    assert not doubled["invariants"]["balances_equal_applied_transfers"]
    assert not doubled["invariants"]["balances_match_workload"]

    conn.run("BEGIN")  # the ledger is append-only: losing a row takes the owner's deliberate amendment
    conn.run("SET LOCAL tandem.ledger_amend = 'on'")
    conn.run("DELETE FROM ledger_transaction WHERE transaction_id = CAST(:id AS uuid)", id=victim)
    conn.run("COMMIT")
    lost = audit(target, wl, before, dlq=dlq)
    assert lost["result"]["lost"] == 1
    assert not lost["invariants"]["nothing_lost"]
    conn.close()


def test_duplicates_are_counted_from_balance_drift_alone() -> None:
    """The matching behind duplicates_applied, without a twin: drift is stored balance minus ledger legs."""
    wl = generate(40, 0, 0, seed=8)
    transfers = wl.transfers()
    a, b, c = sorted(transfers, key=lambda t: -transfers[t].amount_minor)[:3]

    def effect(*ids: str) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for tid in ids:
            t = transfers[tid]
            out[(t.account_id, t.currency)] = out.get((t.account_id, t.currency), 0) - t.amount_minor
            out[(t.counterparty_id, t.currency)] = out.get((t.counterparty_id, t.currency), 0) + t.amount_minor
        return {k: v for k, v in out.items() if v}

    rows = set(transfers)
    assert duplicates_applied({}, transfers, rows).ids == []
    found = duplicates_applied(effect(a, b), transfers, rows)
    assert (found.ids, found.unexplained) == (sorted([a, b]), {})
    assert duplicates_applied(effect(c, c), transfers, rows).ids == [c]  # three applications: one transfer
    # applied once without its ledger row: a lost row (nothing_lost catches it), not a duplicate
    assert duplicates_applied(effect(a), transfers, rows - {a}).ids == []
    odd = {(transfers[a].account_id, transfers[a].currency): -1, ("nobody", transfers[a].currency): 1}
    assert duplicates_applied(odd, transfers, rows).unexplained == odd
    assert parse_transaction(wl.valid[a]).amount_minor == transfers[a].amount_minor
