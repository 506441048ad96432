"""One invocation of the failover handler's logic on moto: plan, refuse (recorded, paged) or execute."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from failover_handler.events import Action, Request, parse_request
from failover_handler.history import ExecutionLog, ExecutionRecord
from failover_handler.metrics import EmfExecutionMetrics
from failover_handler.plan import STEPS
from failover_handler.runbook import Order, Runbook
from failover_handler.service import (
    LEASE_MARGIN_SECONDS,
    ExecutionFailed,
    ExecutionInProgress,
    Facts,
    FailoverService,
    no_witness,
)
from failover_handler.witness import Sighting
from tandem.twin.extensions import rds_global
from tandem.twin.log_metrics import parse_emf
from tandem_core.control import CONTROL_KEY, ControlStore, LockRefused, NewExecution
from tandem_core.heartbeat import to_attributes
from tandem_core.readiness import read_readiness, readiness_key
from tests.conftest import FakeClock, load_event
from tests.unit.failover_world import DR, PRIMARY, TABLE, World, two_regions

NOW = 1_800_000_000.0
ALARM = parse_request(load_event("failover_alarm.json"))


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    with two_regions() as w:
        yield w


def ready(world: World, verdict: str = "ready", at: float = NOW - 20) -> None:
    """DR's monitor has judged its region (the record as the monitor writes it)."""
    record = {"region": DR, "verdict": verdict, "reasons": [] if verdict == "ready" else ["aurora_lag_above_budget"],
              "measured_at_epoch": at, "stores": {"aurora": {"lag_seconds": 0.4}}}  # fmt: skip
    world.clients[DR]["dynamodb"].put_item(TableName=TABLE, Item={**readiness_key(DR), **to_attributes(record)})


def service(
    world: World, clock: FakeClock, peer_reachable: bool = False, *, ledger_failing: bool = False,
    witness: Sighting | None = None,
) -> FailoverService:  # fmt: skip
    """``ledger_failing``: the peer's heartbeat says its ledger cannot commit; ``witness``: Route53's view."""
    db = world.clients[DR]["dynamodb"]
    ids = iter(f"exec-{i}" for i in range(100))
    facts = Facts(
        lambda r: read_readiness(db, TABLE, r), lambda: peer_reachable, lambda: ledger_failing,
        (lambda: witness) if witness is not None else no_witness,
    )  # fmt: skip
    return FailoverService(
        world.settings(), DR, control=ControlStore(db, TABLE, PRIMARY), history=ExecutionLog(db, TABLE),
        runbook=world.runbook(), facts=facts,
        metrics=EmfExecutionMetrics(DR), clock=clock.now, new_id=lambda: next(ids),
    )  # fmt: skip


def live_state(world: World) -> dict[str, Any]:
    db = world.clients[DR]["dynamodb"]
    return {
        "writer": world.writer(), "dr": world.processing(DR), "primary": world.processing(PRIMARY),
        "gate": world.gate(), "control": ControlStore(db, TABLE, PRIMARY).read(),
        "executions": ExecutionLog(db, TABLE).latest(), "notices": world.notices(),
    }  # fmt: skip


def test_the_alarm_activates_dr_once_with_every_step_recorded(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ready(world)
    reply = service(world, FakeClock(NOW)).handle(ALARM)
    assert (reply["outcome"], reply["resumed"]) == ("completed", False)
    execution = reply["execution"]
    assert (execution["trigger"], execution["action"], execution["mode"]) == ("alarm", "failover", "failover")
    assert [s["name"] for s in execution["steps"]] == list(STEPS)
    assert {s["outcome"] for s in execution["steps"]} == {"completed"}
    assert execution["rpo_estimate_seconds"] == 0.4
    state = live_state(world)
    assert (state["writer"], state["dr"], state["primary"], state["gate"]) == (DR, "Enabled", "Disabled", [0.0])
    control = state["control"]
    assert (control.active_region, control.epoch, control.state.value, control.last_outcome) == (
        DR,
        1,
        "idle",
        "completed",
    )
    assert [e.id for e in state["executions"]] == ["exec-0"]
    assert state["notices"][0]["execution_id"] == "exec-0"
    points = [p for line in capsys.readouterr().out.splitlines() for p in parse_emf(line)]
    assert {(p.name, p.dimensions) for p in points} >= {
        ("FailoverExecutions", (("Region", DR),)), ("FailoverExecutions", (("Region", DR), ("Outcome", "completed"))),
        ("FailoverSeconds", (("Region", DR),)), ("EstimatedRpoSeconds", (("Region", DR),)),
    }  # fmt: skip

    again = service(world, FakeClock(NOW + 5)).handle(ALARM)  # the alarm's retry, or a late duplicate
    assert (again["outcome"], again["execution"]) == ("refused", None)  # moot: nothing recorded, nobody paged
    assert again["reasons"] == ["already_active", "minimum_delay_not_passed"]
    assert len(ExecutionLog(world.clients[DR]["dynamodb"], TABLE).latest()) == 1


def test_a_duplicate_while_an_execution_runs_is_refused_and_records_nothing(world: World) -> None:
    ready(world)
    ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY).acquire(
        NewExecution("first", "failover", "failover", DR), NOW, 120
    )
    reply = service(world, FakeClock(NOW + 1)).handle(Request(Action.FAILOVER, "operator"))
    assert (reply["outcome"], reply["reasons"]) == ("refused", ["execution_running"])
    with pytest.raises(ExecutionInProgress, match="execution first"):  # the alarm's event: Lambda retries it
        service(world, FakeClock(NOW + 1)).handle(ALARM)
    assert ExecutionLog(world.clients[DR]["dynamodb"], TABLE).latest() == []
    assert world.writer() == PRIMARY


def test_the_alarms_retry_resumes_a_run_whose_invocation_died_once_its_lease_lapsed(world: World) -> None:
    """Lambda retries an event whose invocation failed 1 and 3 minutes later; the lease (150 s) lapses between."""
    ready(world)
    control = ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY)
    control.acquire(NewExecution("died", "failover", "failover", DR), NOW, 150)  # what the first invocation did:
    log = ExecutionLog(world.clients[DR]["dynamodb"], TABLE)
    log.write(ExecutionRecord("died", "alarm", "failover", "failover", DR, NOW, epoch=1))
    control.step_done("died", "notify", NOW + 2, 150)  # ... then it died
    with pytest.raises(ExecutionInProgress):
        service(world, FakeClock(NOW + 62)).handle(ALARM)  # first retry: the lease is still live
    reply = service(world, FakeClock(NOW + 182)).handle(ALARM)  # second retry
    assert (reply["outcome"], reply["resumed"]) == ("completed", True)
    steps = reply["execution"]["steps"]
    assert sorted(s["name"] for s in steps) == sorted(STEPS)  # each once: notify is not sent again
    assert [s["started_at"] for s in steps if s["name"] == "notify"] == [None]  # done before the crash
    assert len(world.notices()) == 0  # the dead invocation's notice is its own; this run sent none
    assert world.writer() == DR
    assert [(e.id, e.outcome) for e in log.latest()] == [("died", "completed")]


def test_a_region_that_is_not_ready_refuses_pages_and_changes_nothing_unless_forced(world: World) -> None:
    ready(world, "not_ready")
    before = live_state(world)
    reply = service(world, FakeClock(NOW)).handle(ALARM)
    assert (reply["outcome"], reply["reasons"]) == ("refused", ["region_not_ready"])
    after = live_state(world)
    assert {k: after[k] for k in ("writer", "dr", "primary", "gate", "control")} == {
        k: before[k] for k in ("writer", "dr", "primary", "gate", "control")
    }
    assert [(e.outcome, e.reasons) for e in after["executions"]] == [("refused", ["region_not_ready"])]
    assert after["notices"][0]["reasons"] == ["region_not_ready"]  # paged
    assert after["notices"][0]["readiness_reasons"] == ["aurora_lag_above_budget"]

    forced = service(world, FakeClock(NOW + 60)).handle(Request(Action.FAILOVER, "operator", force=True))
    assert forced["outcome"] == "completed"
    assert world.writer() == DR


def test_plan_changes_nothing_and_says_what_a_run_would_do(world: World) -> None:
    ready(world)
    before = live_state(world)
    reply = service(world, FakeClock(NOW)).handle(Request(Action.PLAN, "operator"))
    assert reply["changed"] is False
    assert reply["plan"]["allowed"] is True
    assert (reply["plan"]["mode"], reply["plan"]["steps"]) == ("failover", list(STEPS))
    assert live_state(world) == before


def test_a_reachable_caught_up_primary_makes_the_operators_failover_a_switchover(world: World) -> None:
    ready(world)
    reply = service(world, FakeClock(NOW), peer_reachable=True).handle(Request(Action.SWITCHOVER, "operator"))
    assert (reply["outcome"], reply["execution"]["mode"], reply["execution"]["rpo_estimate_seconds"]) == (
        "completed", "switchover", 0.0,
    )  # fmt: skip
    assert [p.mode for p in world.promotions] == ["switchover"]


def test_an_alarm_whose_peer_answers_again_moves_nothing_and_pages(world: World) -> None:
    """Finding 4: the blip was over (or the fault was ours) by the time the handler planned - it still ran, as a
    switchover. An alarm never moves a primary that answers and commits."""
    ready(world)
    reply = service(world, FakeClock(NOW), peer_reachable=True).handle(ALARM)
    assert (reply["outcome"], reply["reasons"]) == ("refused", ["peer_answers"])
    (notice,) = world.notices()
    assert notice["reasons"] == ["peer_answers"]
    assert "the peer answers now" in notice["hint"]
    assert world.promotions == []
    assert live_state(world)["control"].active_region == PRIMARY


def test_an_alarm_whose_peer_answers_but_says_its_ledger_cannot_commit_fails_over(world: World) -> None:
    """Finding 3: a grey database failure - the primary's ingress answers, its writer is gone. Only a failover
    moves the writer (a switchover needs the old one to hand over)."""
    ready(world)
    reply = service(world, FakeClock(NOW), peer_reachable=True, ledger_failing=True).handle(ALARM)
    assert (reply["outcome"], reply["execution"]["mode"]) == ("completed", "failover")
    assert [p.mode for p in world.promotions] == ["failover"]


def test_an_alarm_whose_peer_is_seen_healthy_from_outside_pages_this_regions_own_fault(world: World) -> None:
    """Finding 4: DR cut off from a healthy primary (its egress, a replication stall into it) fires the same
    alarm as the primary's loss. Route53's checkers, outside DR, see the primary healthy: no failover."""
    ready(world)
    reply = service(world, FakeClock(NOW), witness=Sighting(True, 15, 1, "15 of 16 see it healthy")).handle(ALARM)
    assert (reply["outcome"], reply["reasons"]) == ("refused", ["peer_healthy_from_outside"])
    (notice,) = world.notices()
    assert notice["hint"].startswith("THIS region's own fault is suspected")
    assert notice["witness"] == "15 of 16 see it healthy"
    assert world.promotions == []
    assert live_state(world)["control"].active_region == PRIMARY
    operator = service(world, FakeClock(NOW + 10)).handle(Request(Action.FAILOVER, "operator"))
    assert operator["outcome"] == "completed"  # an operator who knows the primary is lost is not second-guessed


def test_a_witness_without_a_view_leaves_the_decision_to_this_regions_signals(world: World) -> None:
    ready(world)
    witness = Sighting(None, detail="Route53 did not answer")
    assert service(world, FakeClock(NOW), witness=witness).handle(ALARM)["outcome"] == "completed"


def test_status_shows_the_control_record_and_the_executions_newest_first(world: World) -> None:
    ready(world, "not_ready")
    service(world, FakeClock(NOW)).handle(ALARM)
    ready(world, at=NOW + 100)
    service(world, FakeClock(NOW + 110)).handle(Request(Action.FAILOVER, "operator", force=True))
    status = service(world, FakeClock(NOW + 120)).handle(Request(Action.STATUS, "operator"))
    assert status["control"]["active_region"] == DR
    assert [(e["outcome"], e["trigger"]) for e in status["executions"]] == [
        ("completed", "operator"),
        ("refused", "alarm"),
    ]


def refuse_promotions(world: World, times: int) -> None:
    """The first ``times`` promotion calls fail (a grey database, a throttled API); later ones go through."""
    failures = iter(range(times))

    def promote(request: Any) -> None:
        if next(failures, None) is not None:
            raise RuntimeError("the global cluster is busy")
        world.promotions.append(request)

    rds_global.set_promotion_handler(promote)


def test_a_failed_promotion_pages_is_retried_by_lambda_and_resumed_by_the_monitor_never_wedged(world: World) -> None:
    """Finding 1: fencing, DNS and the notice ran; the promotion failed. Before: the invocation returned
    normally (no retry), the alarm stayed in ALARM (no new event) and nothing resumed it - DR active by the
    record, its processing never enabled, nobody paged."""
    ready(world)
    refuse_promotions(world, 2)
    with pytest.raises(ExecutionFailed, match="promote_database"):
        service(world, FakeClock(NOW)).handle(ALARM)
    state = live_state(world)
    assert (state["control"].state.value, state["writer"], state["dr"]) == ("running", PRIMARY, "Disabled")
    assert [(e.outcome, e.reasons) for e in state["executions"]] == [("failed", ["step_failed:promote_database"])]
    paged = [n for n in state["notices"] if "failed_steps" in n]
    assert [list(n["failed_steps"]) for n in paged] == [["promote_database"]]

    with pytest.raises(ExecutionFailed):  # Lambda's first retry, a minute later: the promotion fails again
        service(world, FakeClock(NOW + 60)).handle(ALARM)
    monitor = parse_request({"action": "resume", "trigger": "monitor"})  # Lambda's retries are spent
    reply = service(world, FakeClock(NOW + 240)).handle(monitor)
    assert (reply["outcome"], reply["resumed"]) == ("completed", True)
    state = live_state(world)
    assert (state["control"].state.value, state["writer"], state["dr"]) == ("idle", DR, "Enabled")
    assert [e.outcome for e in state["executions"]] == ["completed"]  # one execution, resumed twice
    nothing = service(world, FakeClock(NOW + 300)).handle(monitor)  # the monitor's next run: nothing to resume
    assert (nothing["outcome"], nothing["reasons"]) == ("refused", ["nothing_to_resume"])


def test_only_the_region_being_activated_takes_over_its_execution(world: World) -> None:
    """Finding 2: DR's execution is stuck (lease lapsed); the primary's handler - `tandem failback`, or its own
    alarm - used to resume it with steps acting for the primary while the record said DR."""
    ready(world)
    dr = ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY)
    dr.acquire(NewExecution("stuck", "failover", "failover", DR), NOW, 120)
    dr.release("stuck", NOW + 1)
    item = world.clients[DR]["dynamodb"].get_item(TableName=TABLE, Key=CONTROL_KEY)["Item"]
    world.clients[PRIMARY]["dynamodb"].put_item(TableName=TABLE, Item=item)  # replicated to the primary
    db = world.clients[PRIMARY]["dynamodb"]
    primary = FailoverService(
        world.settings(PRIMARY), PRIMARY, control=ControlStore(db, TABLE, PRIMARY), history=ExecutionLog(db, TABLE),
        runbook=world.runbook(PRIMARY), facts=Facts(lambda r: read_readiness(db, TABLE, r), lambda: True),
        metrics=EmfExecutionMetrics(PRIMARY), clock=FakeClock(NOW + 200).now,
    )  # fmt: skip
    for request in (Request(Action.FAILBACK, "operator", force=True), Request(Action.RESUME, "operator")):
        reply = primary.handle(request)
        assert (reply["outcome"], reply["reasons"]) == ("refused", ["execution_for_other_region"])
    with pytest.raises(LockRefused, match="execution_for_other_region"):  # the lock says so too
        ControlStore(db, TABLE, PRIMARY).acquire(NewExecution("x", "failback", "switchover", PRIMARY), NOW + 200, 120)
    assert world.promotions == []
    assert world.writer() == PRIMARY
    assert (world.processing(PRIMARY), world.processing(DR)) == ("Enabled", "Disabled")  # nothing acted
    assert ControlStore(db, TABLE, PRIMARY).read().execution_id == "stuck"


def test_a_forced_failover_resumes_a_stuck_switchover_as_a_failover_that_owes_reconciliation(world: World) -> None:
    ready(world)
    refuse_promotions(world, 5)
    first = service(world, FakeClock(NOW), peer_reachable=True).handle(Request(Action.SWITCHOVER, "operator"))
    assert first["outcome"] == "failed"
    again = service(world, FakeClock(NOW + 60)).handle(Request(Action.RESUME, "monitor"))  # peer gone now
    assert (again["outcome"], again["execution"]["mode"]) == ("failed", "switchover")  # as decided, in vain
    refuse_promotions(world, 0)
    reply = service(world, FakeClock(NOW + 120)).handle(Request(Action.FAILOVER, "operator", force=True))
    assert (reply["outcome"], reply["resumed"], reply["execution"]["mode"]) == ("completed", True, "failover")
    assert [p.mode for p in world.promotions] == ["failover"]
    control = ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY).read()
    assert (control.mode, [(o.epoch, o.old_region) for o in control.owed]) == ("failover", [(1, PRIMARY)])


def test_the_lease_outlives_the_invocation_whatever_the_setting(world: World) -> None:
    """Finding 6: FailoverLeaseSeconds below the handler's timeout let a second invocation take over an
    execution the first was still running (two invocations running one execution's steps)."""
    ready(world)
    seen: list[float | None] = []
    control = ControlStore(world.clients[DR]["dynamodb"], TABLE, PRIMARY)

    class Watching(Runbook):
        def run(self, step: str, order: Order) -> str:
            seen.append(control.read().lease_until)
            return super().run(step, order)

    svc = service(world, FakeClock(NOW))
    svc._runbook = Watching(world.settings(), world.apis(DR), world.apis(PRIMARY), sleep=lambda _s: None)
    assert world.settings().lease_seconds < 300.0 + LEASE_MARGIN_SECONDS  # a Timeout of 5 minutes
    assert svc.handle(ALARM, seconds_left=300.0)["outcome"] == "completed"
    assert min(x for x in seen if x is not None) == NOW + 300.0 + LEASE_MARGIN_SECONDS
