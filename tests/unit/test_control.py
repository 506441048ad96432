"""The control record as the lock and the fence: one execution at a time, resumable, with a minimum delay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.local import ledger_table_keys
from tandem_core.control import CONTROL_KEY, ControlStore, LockRefused, NewExecution, Owed, State

TABLE, PRIMARY, DR = "tandem-ledger", "us-east-1", "us-west-2"
LEASE = 120.0
T0 = 1_800_000_000.0


@pytest.fixture
def db(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=DR)
        client.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        yield client


def store(db: Any) -> ControlStore:
    return ControlStore(db, TABLE, initial_active_region=PRIMARY)


def failover(execution_id: str, target: str = DR, min_delay: float = 1800.0) -> NewExecution:
    return NewExecution(execution_id, "failover", "failover", target, min_delay_seconds=min_delay)


def test_before_any_execution_the_primary_is_active_at_epoch_zero(db: Any) -> None:
    record = store(db).read()
    assert (record.active_region, record.epoch, record.state, record.exists) == (PRIMARY, 0, State.IDLE, False)


def test_taking_the_lock_moves_the_active_region_and_bumps_the_epoch_in_one_write(db: Any) -> None:
    acquired = store(db).acquire(failover("x1"), T0, LEASE)
    assert not acquired.resumed
    record = store(db).read()
    assert (record.active_region, record.epoch, record.state) == (DR, 1, State.RUNNING)
    assert (record.execution_id, record.previous_region, record.steps_done) == ("x1", PRIMARY, ())
    assert record.lease_until == T0 + LEASE


def test_of_fifty_attempts_exactly_one_takes_the_lock(db: Any) -> None:
    outcomes: list[str] = []
    for i in range(50):
        try:
            store(db).acquire(failover(f"x{i}"), T0 + i * 0.01, LEASE)
            outcomes.append("acquired")
        except LockRefused as refused:
            outcomes.append(refused.reason)
    assert outcomes.count("acquired") == 1
    assert set(outcomes) == {"acquired", "execution_running"}
    assert store(db).read().epoch == 1


def test_activating_the_active_region_is_refused(db: Any) -> None:
    with pytest.raises(LockRefused) as refused:
        store(db).acquire(failover("x1", target=PRIMARY), T0, LEASE)
    assert refused.value.reason == "already_active"
    assert not store(db).read().exists


def test_a_lapsed_lease_is_taken_over_with_the_completed_steps_kept(db: Any) -> None:
    s = store(db)
    s.acquire(failover("x1"), T0, LEASE)
    s.step_done("x1", "promote_database", T0 + 5, LEASE)
    with pytest.raises(LockRefused, match="execution_running"):  # the holder's lease is live
        s.acquire(failover("x2"), T0 + 10, LEASE)
    taken = s.acquire(failover("x3"), T0 + 5 + LEASE + 1, LEASE)
    assert taken.resumed
    assert (taken.record.execution_id, taken.record.steps_done, taken.record.epoch) == ("x1", ("promote_database",), 1)


def test_a_released_lease_is_resumed_at_once(db: Any) -> None:
    s = store(db)
    s.acquire(failover("x1"), T0, LEASE)
    s.release("x1", T0 + 3)
    assert s.acquire(failover("x2"), T0 + 3, LEASE).resumed


def test_only_the_holder_records_steps_or_finishes(db: Any) -> None:
    s = store(db)
    s.acquire(failover("x1"), T0, LEASE)
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        s.step_done("intruder", "notify", T0 + 1, LEASE)
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        s.finish("intruder", "completed", T0 + 1)
    assert s.read().steps_done == ()


def test_the_minimum_delay_counts_from_the_end_of_the_last_execution(db: Any) -> None:
    s = store(db)
    s.acquire(failover("x1"), T0, LEASE)
    finished = s.finish("x1", "completed", T0 + 60)
    assert (finished.state, finished.last_outcome, finished.active_region) == (State.IDLE, "completed", DR)
    back = NewExecution("x2", "failback", "switchover", PRIMARY, min_delay_seconds=1800.0)
    with pytest.raises(LockRefused) as refused:
        s.acquire(back, T0 + 60 + 1799, LEASE)
    assert refused.value.reason == "minimum_delay_not_passed"
    again = s.acquire(back, T0 + 60 + 1800, LEASE)
    assert (again.record.active_region, again.record.epoch, again.record.previous_region) == (PRIMARY, 2, DR)


def test_an_unplanned_failover_owes_a_reconciliation_of_its_epoch_until_it_completes(db: Any) -> None:
    """Finding 3 of the backlog issue: the debt is tracked per failover epoch, so a later switchover or a
    forced failback cannot erase it; only mark_reconciled of that epoch does."""
    s = store(db)
    s.acquire(failover("x1"), T0, LEASE)
    assert s.read().owed == (Owed(1, PRIMARY, T0),)
    assert not s.read().awaits_reconciliation  # running: reconciliation waits for the execution
    s.finish("x1", "completed", T0 + 60)
    assert s.read().awaits_reconciliation
    s.acquire(NewExecution("x2", "failback", "switchover", PRIMARY), T0 + 100, LEASE)
    s.finish("x2", "completed", T0 + 160)
    record = s.read()
    assert (record.active_region, record.epoch, record.owed) == (PRIMARY, 2, (Owed(1, PRIMARY, T0),))
    assert s.old_region_fenced(record.owed[0], T0 + 200) == T0 + 200
    assert s.old_region_fenced(record.owed[0], T0 + 300) == T0 + 200  # the first sighting is kept
    assert s.mark_reconciled(record.owed[0]) is True
    assert s.mark_reconciled(record.owed[0]) is False  # owed no more: nothing written
    after = s.read()
    assert (after.owed, after.old_fenced_at, after.reconciled_epoch, after.awaits_reconciliation) == ((), {}, 1, False)
    s.acquire(NewExecution("x3", "switchover", "switchover", DR), T0 + 2000, LEASE)  # drops the settled entry
    assert (s.read().owed, s.read().settled, s.read().reconciled_epoch) == ((), (), 1)  # and keeps what it said


def test_a_planned_switchover_owes_nothing(db: Any) -> None:
    s = store(db)
    s.acquire(NewExecution("x1", "switchover", "switchover", DR), T0, LEASE)
    s.finish("x1", "completed", T0 + 60)
    assert (s.read().owed, s.read().awaits_reconciliation) == ((), False)


def test_a_record_written_before_owed_existed_owes_its_last_unplanned_failover(db: Any) -> None:
    db.put_item(TableName=TABLE, Item={
        **CONTROL_KEY, "active_region": {"S": DR}, "epoch": {"N": "3"}, "state": {"S": "idle"},
        "mode": {"S": "failover"}, "last_outcome": {"S": "completed"}, "previous_region": {"S": PRIMARY},
        "started_at": {"N": repr(T0)}, "reconciled_epoch": {"N": "1"},
    })  # fmt: skip
    s = store(db)
    (owed,) = s.read().owed
    assert owed == Owed(3, PRIMARY, T0)
    assert s.mark_reconciled(owed) is True
    assert (s.read().owed, s.read().reconciled_epoch) == ((), 3)


def test_a_reconciliation_in_one_region_and_a_lock_in_the_other_both_survive_last_writer_wins(aws_env: None) -> None:
    """Finding 5 of the failover issue: the global table resolves concurrent writes to one item by keeping the
    later writer's whole item. DR marks epoch 1 reconciled while the primary takes a failback's lock; before,
    both wrote CONTROL/ACTIVE and the later one erased the other (the lock, mid-promotion, or the mark)."""
    with mock_aws():
        replicas = {}
        for region in (PRIMARY, DR):
            replicas[region] = boto3.client("dynamodb", region_name=region)
            replicas[region].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        dr, primary = store(replicas[DR]), store(replicas[PRIMARY])
        dr.acquire(failover("x1"), T0, LEASE)
        dr.finish("x1", "completed", T0 + 60)
        baseline = items(replicas[DR])
        for item in baseline.values():  # replicated: both replicas agree, DR active at epoch 1, epoch 1 owed
            replicas[PRIMARY].put_item(TableName=TABLE, Item=item)
        (owed,) = dr.read().owed

        primary.acquire(NewExecution("back", "failback", "switchover", PRIMARY, 0.0), T0 + 100, LEASE)  # forced
        assert dr.mark_reconciled(owed, T0 + 101) is True  # meanwhile, in DR's replica: the later write
        last_writer_wins(replicas, baseline, order=(PRIMARY, DR))

        for region, replica in replicas.items():
            record = store(replica).read()
            assert (record.state, record.execution_id, record.active_region) == (State.RUNNING, "back", PRIMARY), region
            assert (record.owed, record.reconciled_epoch) == ((), 1), region


def items(replica: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in replica.scan(TableName=TABLE)["Items"]}


def last_writer_wins(replicas: dict[str, Any], baseline: dict[Any, Any], order: tuple[str, str]) -> None:
    """The global table's replication after concurrent writes: every item changed since ``baseline`` reaches
    both replicas; one changed in both ends as the whole item of the later writer (``order``: earlier, later)."""
    winners: dict[Any, dict[str, Any]] = {}
    for region in order:
        for key, item in items(replicas[region]).items():
            if baseline.get(key) != item:
                winners[key] = item
    for replica in replicas.values():
        for item in winners.values():
            replica.put_item(TableName=TABLE, Item=item)


def test_two_regions_taking_the_lock_at_once_end_with_exactly_one_execution_that_acts(aws_env: None) -> None:
    """Finding 5 of the failover issue: conditions are regional, so two replicas that disagree (the aftermath
    of a partition) can each grant the lock. The global table keeps the later write whole in both; a new
    execution acts only once its lock shows in both replicas, so the earlier one stands down before acting."""
    with mock_aws():
        replicas = {}
        for region in (PRIMARY, DR):
            replicas[region] = boto3.client("dynamodb", region_name=region)
            replicas[region].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        for region, active, epoch in ((PRIMARY, DR, "1"), (DR, PRIMARY, "2")):  # each sees the other active
            record = {"active_region": {"S": active}, "epoch": {"N": epoch}, "state": {"S": "idle"}}
            replicas[region].put_item(TableName=TABLE, Item={**CONTROL_KEY, **record})
        baseline = {r: items(replicas[r]) for r in replicas}
        primary, dr = store(replicas[PRIMARY]), store(replicas[DR])
        primary.acquire(NewExecution("back", "failback", "switchover", PRIMARY, 0.0), T0, LEASE)
        dr.acquire(NewExecution("over", "failover", "failover", DR, 0.0), T0 + 0.1, LEASE)  # the later write

        def replicate_then_wait(_seconds: float) -> None:
            for region in replicas:  # each replica's own baseline: they disagreed before either write
                winners = {
                    k: v for r in (PRIMARY, DR) for k, v in items(replicas[r]).items() if baseline[r].get(k) != v
                }
                for item in winners.values():
                    replicas[region].put_item(TableName=TABLE, Item=item)

        clock = iter(range(100))
        with pytest.raises(LockRefused, match="lost_to_concurrent_execution"):
            primary.confirm("back", dr, timeout=10, clock=lambda: float(next(clock)), sleep=replicate_then_wait)
        assert dr.confirm("over", primary, timeout=10, clock=lambda: 0.0, sleep=lambda _s: None) == (
            "held in both replicas"
        )
        for replica in replicas.values():
            assert (store(replica).read().execution_id, store(replica).read().active_region) == ("over", DR)
