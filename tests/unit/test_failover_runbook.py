"""The runbook's steps and their execution on moto (in-process, with the twin's global-cluster extension)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from failover_handler.execution import execute
from failover_handler.plan import STEPS
from failover_handler.runbook import Order, Runbook, StepFailed
from tandem_core.control import ControlStore, NewExecution
from tandem_core.intake import AcceptedLog, AcceptedReplay
from tests.conftest import transfer
from tests.unit.failover_world import CLUSTER, DR, FUNCTION, PRIMARY, TABLE, World, two_regions

T0 = 1_800_000_000.0


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    with two_regions() as w:
        yield w


def order(mode: str = "failover", target: str = DR) -> Order:
    return Order("x1", "failover", mode, target, {"rpo_estimate_seconds": 0.4})


def test_each_step_does_its_job_and_again_changes_nothing(world: World) -> None:
    rb = world.runbook()
    assert (world.writer(), world.processing(PRIMARY), world.processing(DR)) == (PRIMARY, "Enabled", "Disabled")
    assert rb.run("promote_database", order()) == f"{CLUSTER[DR]} promoted by failover"
    assert rb.run("promote_database", order()) == f"{CLUSTER[DR]} is the global writer already"
    assert [p.mode for p in world.promotions] == ["failover"]
    assert rb.run("fence_peer_processing", order()) == f"{PRIMARY} processing disabled"
    assert rb.run("fence_peer_processing", order()) == f"{PRIMARY} processing disabled (already)"
    assert rb.run("enable_processing", order()) == f"{DR} processing enabled"
    assert rb.run("shift_dns", order()) == f"PrimaryActive=0 published in {DR}"
    assert rb.run("notify", order()).startswith("notified")
    assert (world.writer(), world.processing(PRIMARY), world.processing(DR)) == (DR, "Disabled", "Enabled")
    assert world.gate() == [0.0]
    assert world.notices() == [{"execution_id": "x1", "rpo_estimate_seconds": 0.4}]


def test_a_planned_move_is_a_switchover_and_failback_reopens_the_gate_in_the_dr_region(world: World) -> None:
    world.runbook().run("promote_database", order("switchover"))
    assert [p.mode for p in world.promotions] == ["switchover"]
    back = world.runbook(PRIMARY)
    assert back.run("shift_dns", order("switchover", target=PRIMARY)) == f"PrimaryActive=1 published in {DR}"


def test_a_process_without_a_mapping_is_a_failed_step_not_a_silent_success(world: World) -> None:
    for mapping in world.clients[DR]["lambda"].list_event_source_mappings(FunctionName=FUNCTION[DR])[
        "EventSourceMappings"
    ]:
        world.clients[DR]["lambda"].delete_event_source_mapping(UUID=mapping["UUID"])
    with pytest.raises(StepFailed, match="has no SQS event source mapping"):
        world.runbook().run("enable_processing", order())


def lock(world: World, execution_id: str = "x1") -> ControlStore:
    store = ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY)
    store.acquire(NewExecution(execution_id, "failover", "failover", DR), T0, 120)
    return store


def test_an_execution_runs_independent_steps_together_and_processing_after_the_database(world: World) -> None:
    store = lock(world)
    outcome = execute(order(), STEPS, (), world.runbook(), store, lease_seconds=120)
    assert outcome.outcome == "completed"
    assert {s.name: s.outcome for s in outcome.steps} == dict.fromkeys(STEPS, "completed")
    by_name = {s.name: s for s in outcome.steps}
    first_wave = [by_name[n].started_at for n in ("promote_database", "fence_peer_processing", "shift_dns", "notify")]
    assert max(first_wave) <= min(by_name[n].finished_at or 0 for n in ("promote_database",))  # started together
    assert by_name["enable_processing"].started_at >= (by_name["promote_database"].finished_at or 0)
    assert set(store.read().steps_done) == set(STEPS)
    assert (world.writer(), world.processing(DR), world.processing(PRIMARY)) == (DR, "Enabled", "Disabled")


class CrashingRunbook(Runbook):
    """The real runbook whose ``notify`` dies once, as a Lambda timeout or crash would end the step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def run(self, step: str, order: Order) -> str:
        with self._lock:
            self.calls.append(step)
        if step == "notify" and self.calls.count("notify") == 1:
            raise StepFailed("simulated crash while notifying")
        return super().run(step, order)


def test_a_failed_step_leaves_the_rest_recorded_and_the_resume_runs_only_what_is_left(world: World) -> None:
    store = lock(world)
    rb = CrashingRunbook(world.settings(), world.apis(DR), world.apis(PRIMARY), sleep=lambda _s: None)
    first = execute(order(), STEPS, (), rb, store, lease_seconds=120)
    assert first.outcome == "failed"
    assert first.failed_steps == ["notify"]
    done = store.read().steps_done
    assert set(done) == set(STEPS) - {"notify"}
    second = execute(order(), [s for s in STEPS if s not in done], done, rb, store, lease_seconds=120)
    assert second.outcome == "completed"
    assert [s.name for s in second.steps] == ["notify"]
    assert sorted(rb.calls) == sorted([*STEPS, "notify"])  # every step once, notify once more
    assert len(world.promotions) == 1


def test_a_best_effort_step_that_fails_is_skipped_and_the_execution_completes(world: World) -> None:
    for mapping in world.clients[PRIMARY]["lambda"].list_event_source_mappings(FunctionName=FUNCTION[PRIMARY])[
        "EventSourceMappings"
    ]:
        world.clients[PRIMARY]["lambda"].delete_event_source_mapping(UUID=mapping["UUID"])
    outcome = execute(order(), STEPS, (), world.runbook(), lock(world), lease_seconds=120)
    assert outcome.outcome == "completed"
    fence = next(s for s in outcome.steps if s.name == "fence_peer_processing")
    assert (fence.outcome, fence.detail.startswith("StepFailed")) == ("skipped", True)


def test_an_unplanned_failover_applies_what_the_old_region_accepted_and_nothing_applied(world: World) -> None:
    """The durable ingress (finding 5 of the backlog issue): the step queues here what the primary accepted
    and left in its queue - without the primary; a switchover strands nothing, a direct ingress cannot."""
    ddb, sqs = world.clients[DR]["dynamodb"], world.clients[DR]["sqs"]
    log = AcceptedLog(ddb, TABLE)
    stranded = transfer("acc-s1", "acc-s2")
    log.record(PRIMARY, json.dumps(stranded), "r1", datetime.now(UTC) - timedelta(minutes=1))
    rb = Runbook(world.settings(), world.apis(DR), world.apis(PRIMARY), sleep=lambda _s: None,
                 accepted=AcceptedReplay(log, sqs, world.queue(DR)))  # fmt: skip
    assert rb.run("apply_accepted", order()) == (
        f"1 accepted by {PRIMARY} in the last 3600 s: 1 sent to this region's queue, 0 applied before"
    )
    (message,) = sqs.receive_message(QueueUrl=world.queue(DR))["Messages"]
    assert json.loads(message["Body"]) == stranded
    assert (
        rb.run("apply_accepted", order("switchover")) == f"a switchover strands nothing: {PRIMARY} forwards its queue"
    )
    assert world.runbook().run("apply_accepted", order()).startswith("durable ingress off")
