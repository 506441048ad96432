"""The ledger-SQL benchmark measures what it says: concurrent writers through the production statement, as the
processor's role (its password set on the throwaway server), every batch committed once, and the skew visible
in what the ledger holds."""

from __future__ import annotations

import pytest

from bench import ledger_sql

pytestmark = pytest.mark.integration


def test_two_skewed_writers_commit_every_batch_once_and_the_top_merchant_takes_its_share() -> None:
    with ledger_sql.ledger_server() as pg:
        run = ledger_sql.ledger_sql_tps(pg, 2, 1.0, skewed=True, seed=3)
        assert run.batches > 0
        assert run.failed == run.deadlocks == 0
        assert ledger_sql.audit(pg, run.batches + 2 * ledger_sql.WARMUP) == []
        conn = pg.connect()
        try:
            (top,) = conn.run("SELECT avg((counterparty_id = 'mer-001')::int)::float FROM ledger_transaction")[0]
        finally:
            conn.close()
    assert abs(top - ledger_sql.hottest_share()) < 0.06


def test_the_audit_names_a_ledger_that_holds_other_than_what_was_committed() -> None:
    with ledger_sql.ledger_server() as pg:
        run = ledger_sql.ledger_sql_tps(pg, 1, 0.5, skewed=False, seed=4)
        problems = ledger_sql.audit(pg, run.batches + ledger_sql.WARMUP + 1)
    assert len(problems) == 1
    assert "the ledger holds" in problems[0]
