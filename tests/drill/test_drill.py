"""The drill end to end: workload through SQS to the handler, Lambda's retry/DLQ semantics, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.drill import DrillOptions, run
from tandem.workload import generate
from tests.conftest import ROOT

pytestmark = pytest.mark.drill


def test_drill_report_holds_every_invariant(tmp_path: Path) -> None:
    report, path = run(DrillOptions(transactions=120, poison=10, duplicates=25, seed=3, report=tmp_path / "r.json"))
    assert path.exists()
    assert json.loads(path.read_text()) == report
    assert report["workload"] == {"sent": 155, "valid": 120, "poison": 10, "duplicates": 25}
    r = report["result"]
    assert (r["committed"], r["duplicates_applied"], r["rejected"], r["lost"]) == (120, 0, 10, 0)
    assert report["invariants"]
    assert all(report["invariants"].values())
    assert report["passed"] is True
    # poison is retried maxReceiveCount times before SQS dead-letters it
    assert report["processing"]["record_failures"] >= 10 * report["processing"]["max_receive_count"]


def test_workload_is_reproducible_from_its_seed() -> None:
    a, b = generate(50, 5, 10, seed=9), generate(50, 5, 10, seed=9)
    assert a.valid == b.valid
    assert a.poison == b.poison
    assert generate(50, 5, 10, seed=10).valid != a.valid
    assert set(a.duplicates) <= set(a.valid.values())


def test_make_drill_command_line_prints_the_report_path_and_exits_zero(tmp_path: Path) -> None:
    report = tmp_path / "cli.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "drill", "--transactions", "30", "--poison", "2", "--duplicates", "5",
         "--seed", "11", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"drill report: {report}" in proc.stdout
    assert "PASSED" in proc.stdout
    assert json.loads(report.read_text())["passed"] is True


def test_the_audit_catches_a_double_application_and_a_lost_write(tmp_path: Path) -> None:
    """The invariants are not decoration: tamper with the ledger the way a bug would, and they fail."""
    import random

    import pg8000.native

    from tandem.drill import FUNCTION, audit, dlq_bodies, drain
    from tandem.lambda_runtime import load_handler
    from tandem.local import function_environment, local_region

    wl = generate(30, 2, 5, seed=5)
    with local_region() as local, function_environment(local.function_env(FUNCTION)):
        drain(local, load_handler(FUNCTION), wl.messages(random.Random(1)))
        dlq = dlq_bodies(local)
        clean = audit(local, wl, committed_metric=30, dlq=dlq)
        assert all(clean["invariants"].values())

        pg = local.postgres
        conn = pg8000.native.Connection(
            user=pg.user, password=pg.password, host="127.0.0.1", port=pg.port, database=pg.database
        )
        victim = next(iter(wl.valid))
        conn.run(  # a second application of one transfer's effect, as a missing idempotency check would do
            "UPDATE account_balance b SET balance_minor = balance_minor + CASE WHEN b.account_id = t.counterparty_id"
            " THEN t.amount_minor ELSE -t.amount_minor END FROM ledger_transaction t"
            " WHERE t.transaction_id = CAST(:id AS uuid) AND b.currency = t.currency"
            " AND b.account_id IN (t.account_id, t.counterparty_id)",
            id=victim,
        )
        doubled = audit(local, wl, committed_metric=31, dlq=dlq)
        assert doubled["result"]["duplicates_applied"] == 1
        assert not doubled["invariants"]["no_duplicates_applied"]
        assert not doubled["invariants"]["balances_equal_applied_transfers"]
        assert not doubled["invariants"]["balances_match_workload"]

        conn.run("DELETE FROM ledger_transaction WHERE transaction_id = CAST(:id AS uuid)", id=victim)
        lost = audit(local, wl, committed_metric=30, dlq=dlq)
        assert lost["result"]["lost"] == 1
        assert not lost["invariants"]["nothing_lost"]
        conn.close()
