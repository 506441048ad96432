"""The plan, table-driven: every refusal reachable, the mode chosen from reachability and readiness."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from failover_handler.events import Action, Request, parse_request
from failover_handler.plan import READINESS_REFUSALS, STEPS, Mode, Situation, make_plan
from tandem_core.control import ControlRecord, Owed, State
from tests.conftest import load_event

PRIMARY, DR = "us-east-1", "us-west-2"
NOW = 1_800_000_000.0


def readiness(
    verdict: str = "ready", age: float = 30.0, aurora_lag: float | None = 0.4, **extra: Any
) -> dict[str, Any]:
    return {
        "verdict": verdict, "reasons": [] if verdict == "ready" else ["dynamodb_lag_above_budget"],
        "measured_at_epoch": NOW - age, "stores": {"aurora": {"lag_seconds": aurora_lag}}, **extra,
    }  # fmt: skip


def situation(**changes: Any) -> Situation:
    base = Situation(
        region=DR, peer_region=PRIMARY, primary_region=PRIMARY,
        control=ControlRecord(active_region=PRIMARY, epoch=0, exists=False),
        readiness=readiness(), peer_reachable=False, now=NOW,
    )  # fmt: skip
    return replace(base, **changes)


ALARM = parse_request(load_event("failover_alarm.json"))


def operator(action: Action, force: bool = False) -> Request:
    return Request(action, "operator", force=force)


def test_a_region_loss_seen_by_the_alarm_is_an_unplanned_failover_with_the_measured_rpo() -> None:
    plan = make_plan(ALARM, situation())
    assert plan.allowed
    assert (plan.action, plan.mode, plan.target_region, plan.steps) == (Action.FAILOVER, Mode.FAILOVER, DR, STEPS)
    assert plan.rpo_estimate_seconds == 0.4


def test_a_reachable_caught_up_peer_makes_even_a_failover_a_switchover_with_rpo_zero() -> None:
    plan = make_plan(operator(Action.FAILOVER), situation(peer_reachable=True))
    assert (plan.mode, plan.rpo_estimate_seconds, plan.allowed) == (Mode.SWITCHOVER, 0.0, True)


def test_a_degraded_region_may_take_over_unplanned_and_the_rpo_falls_back_to_the_last_known_lag() -> None:
    record = readiness("degraded", aurora_lag=None)
    record["stores"]["aurora"]["last_known_lag_seconds"] = 3.2
    plan = make_plan(ALARM, situation(readiness=record, peer_reachable=False))
    assert (plan.allowed, plan.mode, plan.rpo_estimate_seconds) == (True, Mode.FAILOVER, 3.2)


def test_the_rpo_estimate_prefers_the_last_lag_measured_to_a_too_old_one() -> None:
    record = readiness("degraded", aurora_lag=None)
    record["stores"]["aurora"] |= {"last_known_lag_seconds": 3.2, "last_measured_lag_seconds": 1.1}
    assert make_plan(ALARM, situation(readiness=record, peer_reachable=True)).rpo_estimate_seconds == 1.1


@pytest.mark.parametrize(
    ("request_", "changes", "refused"),
    [
        (ALARM, {"control": ControlRecord(DR, 1)}, ["already_active"]),
        (replace(ALARM, alarm_state="OK"), {}, ["alarm_not_in_alarm"]),
        (replace(ALARM, previous_alarm_state="INSUFFICIENT_DATA"), {}, ["peer_never_seen_healthy"]),
        (ALARM, {"region": PRIMARY, "peer_region": DR, "control": ControlRecord(DR, 1)}, ["no_automatic_failback"]),
        (operator(Action.FAILBACK), {}, ["failback_only_to_primary", "peer_unreachable"]),
        (
            operator(Action.SWITCHOVER),
            {"region": PRIMARY, "peer_region": DR, "control": ControlRecord(DR, 1), "peer_reachable": True},
            ["switchover_to_primary_is_failback"],
        ),
        (operator(Action.SWITCHOVER), {}, ["peer_unreachable"]),
        (ALARM, {"control": ControlRecord(PRIMARY, 2, last_finished_at=NOW - 60)}, ["minimum_delay_not_passed"]),
        (ALARM, {"readiness": None}, ["no_readiness_record"]),
        (ALARM, {"readiness": readiness(age=600)}, ["readiness_record_stale"]),
        (ALARM, {"readiness": readiness("not_ready")}, ["region_not_ready"]),
        (operator(Action.SWITCHOVER), {"readiness": readiness("degraded"), "peer_reachable": True}, ["not_caught_up"]),
    ],
)
def test_every_refusal(request_: Request, changes: dict[str, Any], refused: list[str]) -> None:
    plan = make_plan(request_, situation(**changes))
    assert list(plan.refused) == refused
    assert not plan.allowed
    assert plan.steps == ()


def test_every_refusal_is_reported_not_just_the_first() -> None:
    request = replace(ALARM, alarm_state="OK", previous_alarm_state="INSUFFICIENT_DATA")
    plan = make_plan(request, situation(readiness=readiness("not_ready"), control=ControlRecord(DR, 1)))
    assert list(plan.refused) == ["already_active", "alarm_not_in_alarm", "peer_never_seen_healthy", "region_not_ready"]
    assert plan.readiness_reasons == ("dynamodb_lag_above_budget",)


@pytest.mark.parametrize("record", [None, readiness(age=600), readiness("not_ready")])
def test_force_overrides_readiness_and_the_minimum_delay_only(record: dict[str, Any] | None) -> None:
    control = ControlRecord(PRIMARY, 2, last_finished_at=NOW - 60)
    forced = make_plan(operator(Action.FAILOVER, force=True), situation(readiness=record, control=control))
    assert forced.allowed
    assert forced.mode is Mode.FAILOVER
    assert set(make_plan(operator(Action.FAILOVER), situation(readiness=record, control=control)).refused) <= (
        READINESS_REFUSALS | {"minimum_delay_not_passed"}
    )
    held = make_plan(operator(Action.FAILOVER, force=True), situation(control=ControlRecord(DR, 2)))
    assert held.refused == ("already_active",)  # force never overrides what is simply true


def test_a_live_execution_refuses_and_a_lapsed_one_is_resumed_as_it_was_decided() -> None:
    running = ControlRecord(DR, 1, State.RUNNING, "x1", "failover", "failover", PRIMARY, ("promote_database",),
                            lease_until=NOW + 30)  # fmt: skip
    assert make_plan(ALARM, situation(control=running)).refused == ("execution_running",)
    resumed = make_plan(operator(Action.FAILOVER), situation(control=replace(running, lease_until=NOW - 1)))
    assert resumed.resume
    assert (resumed.allowed, resumed.mode, resumed.target_region) == (True, Mode.FAILOVER, DR)
    assert resumed.steps == tuple(s for s in STEPS if s != "promote_database")


def test_plan_is_judged_as_a_failover_would_be() -> None:
    assert make_plan(operator(Action.PLAN), situation()).as_dict() == {
        **make_plan(operator(Action.FAILOVER), situation()).as_dict(),
    }
    assert make_plan(operator(Action.PLAN), situation()).action is Action.FAILOVER


def test_failback_once_the_old_primary_is_caught_up_is_a_planned_switchover() -> None:
    plan = make_plan(
        operator(Action.FAILBACK),
        situation(region=PRIMARY, peer_region=DR, control=ControlRecord(DR, 1, last_finished_at=NOW - 3600),
                  peer_reachable=True),
    )  # fmt: skip
    assert (plan.allowed, plan.mode, plan.rpo_estimate_seconds, plan.target_region) == (
        True, Mode.SWITCHOVER, 0.0, PRIMARY,
    )  # fmt: skip


def test_no_failback_or_switchover_while_a_reconciliation_is_owed_unless_forced() -> None:
    """Finding 3 of the backlog issue: a failback before reconciliation used to leave the old primary's
    journal to nobody. Now it is refused; force moves anyway and the debt stays on the record (per epoch)."""
    owed = ControlRecord(DR, 1, mode="failover", last_outcome="completed", last_finished_at=NOW - 3600,
                         owed=(Owed(1, PRIMARY, NOW - 3700),))  # fmt: skip
    back = situation(region=PRIMARY, peer_region=DR, control=owed, peer_reachable=True)
    assert make_plan(operator(Action.FAILBACK), back).refused == ("reconciliation_owed",)
    assert make_plan(operator(Action.FAILBACK, force=True), back).allowed
    assert make_plan(operator(Action.FAILOVER), back).refused == ()  # an unplanned move is never held by it
    stranded = situation(region=PRIMARY, peer_region=DR, control=owed, peer_reachable=False)
    assert make_plan(operator(Action.FAILBACK, force=True), stranded).refused == ("peer_unreachable",)


# ---------------------------------------------------------------------------------------------- grey and own faults
def test_an_alarm_whose_peer_answers_and_commits_is_refused_whatever_the_readiness() -> None:
    for verdict in ("ready", "degraded"):
        plan = make_plan(ALARM, situation(readiness=readiness(verdict), peer_reachable=True))
        assert plan.refused == ("peer_answers",), verdict


def test_a_peer_that_answers_but_says_its_ledger_cannot_commit_is_failed_over_never_switched_over() -> None:
    grey = situation(peer_reachable=True, peer_ledger_failing=True)
    for request in (ALARM, operator(Action.FAILOVER)):
        plan = make_plan(request, grey)
        assert (plan.allowed, plan.mode, plan.rpo_estimate_seconds) == (True, Mode.FAILOVER, 0.4)
    assert "peer_ledger_failing" in make_plan(operator(Action.SWITCHOVER, force=True), grey).refused


def test_an_alarm_against_a_peer_route53_sees_healthy_is_refused_an_operator_is_not() -> None:
    seen = situation(peer_seen_from_outside=True, witness="3 of 3 checkers see the peer healthy")
    assert make_plan(ALARM, seen).refused == ("peer_healthy_from_outside",)
    assert make_plan(operator(Action.FAILOVER), seen).allowed
    assert make_plan(ALARM, situation(peer_seen_from_outside=False)).allowed
    assert make_plan(ALARM, situation(peer_seen_from_outside=None)).allowed  # no view: this region's signals
