"""The drill end to end on the twin: workload through SQS to the handler, Lambda's retry/DLQ, audit."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tandem.drill import DrillOptions, Target, audit, produce, run, snapshot, take_dlq, wait_drained
from tandem.twin import launcher
from tandem.twin.control import call
from tandem.workload import generate
from tests.conftest import ROOT

pytestmark = pytest.mark.drill


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


def test_the_audit_catches_a_double_application_and_a_lost_write(twin_dir: Path) -> None:
    """The invariants are not decoration: tamper with the ledger the way a bug would, and they fail."""
    target = Target.primary_of(call(twin_dir, "GET", "/status"), twin_dir)
    wl = generate(30, 2, 5, seed=5)
    take_dlq(target)
    before = snapshot(target)
    deadline = time.monotonic() + 120
    produce(target, wl.messages(random.Random(1)), deadline)
    wait_drained(target, deadline)
    dlq = take_dlq(target)
    clean = audit(target, wl, before, committed_metric=30, dlq=dlq)
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
    doubled = audit(target, wl, before, committed_metric=31, dlq=dlq)
    assert doubled["result"]["duplicates_applied"] == 1
    assert not doubled["invariants"]["no_duplicates_applied"]
    assert not doubled["invariants"]["balances_equal_applied_transfers"]
    assert not doubled["invariants"]["balances_match_workload"]

    conn.run("DELETE FROM ledger_transaction WHERE transaction_id = CAST(:id AS uuid)", id=victim)
    lost = audit(target, wl, before, committed_metric=30, dlq=dlq)
    assert lost["result"]["lost"] == 1
    assert not lost["invariants"]["nothing_lost"]
    conn.close()


def test_make_drill_command_line_starts_its_own_twin_and_stops_it(tmp_path: Path) -> None:
    report, state_dir = tmp_path / "cli.json", tmp_path / "twin"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(state_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--transactions", "30", "--poison", "2", "--duplicates", "5",
         "--seed", "11", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"drill report: {report}" in proc.stdout
    assert "PASSED" in proc.stdout
    assert json.loads(report.read_text())["twin"]["started_by_drill"] is True
    assert not launcher.is_running(state_dir)
    assert not (state_dir / "twin.json").exists()


def test_a_poison_only_drill_without_a_running_twin_passes(tmp_path: Path) -> None:
    """Nothing valid means the processor never migrates the ledger; the audit must not trip over that."""
    report, state_dir = tmp_path / "poison.json", tmp_path / "twin"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TANDEM_TWIN_DIR": str(state_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--transactions", "0", "--poison", "3", "--duplicates", "0",
         "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    assert result["passed"] is True
    assert (result["result"]["committed"], result["result"]["rejected"]) == (0, 3)
