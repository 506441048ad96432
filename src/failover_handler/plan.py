"""The plan: what an execution would do in this region now, or why it must not (DESIGN §4 rules 2, 3, 8).

Pure: everything it judges comes in as a :class:`Situation` read beforehand, so ``plan`` (the dry run) and a
real run decide the same way. The region that runs the handler is always the one to activate (rule 1).

Refusals are machine-readable and all of them are reported, not just the first:

- ``execution_running``: another invocation holds the lock (its lease is live);
- ``execution_for_other_region``: the running execution activates the other region - only the region being
  activated takes an execution over (its steps act for that region), whatever was asked here;
- ``nothing_to_resume``: ``resume`` found no running execution (it never starts one);
- ``already_active``: this region is active already;
- alarm trigger only: ``alarm_not_in_alarm``; ``peer_never_seen_healthy`` (the bootstrap guard: the alarm
  must come from OK, i.e. both regions were seen healthy); ``no_automatic_failback`` (an alarm never
  activates the primary-role region again); ``peer_answers`` (the peer answers now and does not say its
  ledger fails: the blip is over, or the fault was ours - an alarm never moves a working primary, not even
  by a switchover); ``peer_healthy_from_outside`` (the peer does not answer us, but Route53's checkers,
  outside this region, see it healthy: this region's own network is the suspect - see
  :mod:`failover_handler.witness`);
- ``minimum_delay_not_passed`` since the last execution;
- ``peer_unreachable`` (a switchover or failback needs the peer), ``peer_ledger_failing`` (and its writer);
  ``failback_only_to_primary``;
  ``switchover_to_primary_is_failback``;
- readiness (rule 3): ``no_readiness_record``, ``readiness_record_stale``, ``region_not_ready``, and for a
  planned move ``not_caught_up`` (anything short of ``ready``);
- planned moves only: ``reconciliation_owed`` - an unplanned failover's reconciliation has not completed; a
  switchover now would leave the old region's journal to nobody until it does.

``force`` overrides, for a failover, the readiness refusals and the minimum delay; for a switchover or a
failback, the minimum delay and ``reconciliation_owed`` (the debt stays recorded per epoch and whichever
region is active pays it). Never the lock, never what makes a planned move impossible (the peer, catching up).
A running execution whose lease lapsed is resumed as it was decided (the fence is already up) - except that
``failover --force`` resumes a switchover the unreachable peer can never complete as a failover.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from failover_handler.events import Action, Request
from tandem_core.control import ControlRecord, State

STEPS = ("promote_database", "fence_peer_processing", "shift_dns", "notify", "enable_processing", "apply_accepted")
READINESS_REFUSALS = frozenset({"no_readiness_record", "readiness_record_stale", "region_not_ready", "not_caught_up"})
OVERRIDABLE = READINESS_REFUSALS | {"minimum_delay_not_passed"}
#: what force overrides for a switchover or failback
PLANNED_OVERRIDABLE = frozenset({"minimum_delay_not_passed", "reconciliation_owed"})


class Mode(enum.StrEnum):
    SWITCHOVER = "switchover"  # planned: Aurora waits until the target has everything (RPO 0)
    FAILOVER = "failover"  # unplanned: AllowDataLoss, the RPO is the last measured lag


@dataclass(frozen=True)
class Situation:
    region: str  # this region, the one to activate
    peer_region: str
    primary_region: str  # the region that is primary by role (where the app normally runs)
    control: ControlRecord
    readiness: Mapping[str, Any] | None  # this region's readiness record as its monitor wrote it
    peer_reachable: bool | None  # the peer's APIs and ingress answered just now (None: not checked)
    now: float
    #: the peer says, with a fresh heartbeat, that its ledger cannot commit (a grey failure: it still answers)
    peer_ledger_failing: bool = False
    #: Route53's checkers' latest view of the peer (True: healthy; None: no view, or not asked)
    peer_seen_from_outside: bool | None = None
    witness: str | None = None  # what the witness said, for the record and the page
    min_delay_seconds: float = 1800.0
    readiness_max_age_seconds: float = 180.0


@dataclass(frozen=True)
class Plan:
    action: Action
    target_region: str
    mode: Mode | None
    refused: tuple[str, ...]
    steps: tuple[str, ...]
    rpo_estimate_seconds: float | None
    resume: bool = False
    readiness_reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.refused

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "target_region": self.target_region,
            "mode": None if self.mode is None else self.mode.value,
            "allowed": self.allowed,
            "refused": list(self.refused),
            "steps": list(self.steps),
            "rpo_estimate_seconds": self.rpo_estimate_seconds,
            "resume": self.resume,
            "readiness_reasons": list(self.readiness_reasons),
        }


def make_plan(request: Request, s: Situation) -> Plan:
    """What ``request`` would do in ``s``: the steps and mode, or every reason it is refused."""
    action = Action.FAILOVER if request.action is Action.PLAN else request.action
    control = s.control
    if control.state is State.RUNNING:
        if control.active_region != s.region:
            return Plan(action, s.region, None, ("execution_for_other_region",), (), None)
        if control.lease_until is not None and control.lease_until > s.now:
            return Plan(action, s.region, None, ("execution_running",), (), None)
        mode = Mode(control.mode) if control.mode in set(Mode) else Mode.FAILOVER
        if mode is Mode.SWITCHOVER and request.force and action is Action.FAILOVER and s.peer_reachable is False:
            mode = Mode.FAILOVER  # the switchover needs the peer, which is gone: only a failover can finish
        resumed_action = Action(control.action) if control.action in set(Action) else action
        left = tuple(step for step in STEPS if step not in control.steps_done)
        return Plan(resumed_action, control.active_region, mode, (), left, None, resume=True)
    if action is Action.RESUME:
        return Plan(action, s.region, None, ("nothing_to_resume",), (), None)

    refused: list[str] = []
    if control.active_region == s.region:
        refused.append("already_active")
    if request.automatic:
        if request.alarm_state != "ALARM":
            refused.append("alarm_not_in_alarm")
        if request.previous_alarm_state != "OK":
            refused.append("peer_never_seen_healthy")
        if s.region == s.primary_region:
            refused.append("no_automatic_failback")
        if s.peer_reachable is True and not s.peer_ledger_failing:
            refused.append("peer_answers")
        if s.peer_reachable is False and s.peer_seen_from_outside is True:
            refused.append("peer_healthy_from_outside")
    if action is Action.FAILBACK and s.region != s.primary_region:
        refused.append("failback_only_to_primary")
    if action is Action.SWITCHOVER and s.region == s.primary_region:
        refused.append("switchover_to_primary_is_failback")
    planned = action in (Action.SWITCHOVER, Action.FAILBACK)
    if planned and s.peer_reachable is not True:
        refused.append("peer_unreachable")
    if planned and s.peer_ledger_failing:
        refused.append("peer_ledger_failing")  # a switchover needs the peer's writer to hand over
    if control.last_finished_at is not None and s.now - control.last_finished_at < s.min_delay_seconds:
        refused.append("minimum_delay_not_passed")
    if planned and control.owed:
        refused.append("reconciliation_owed")
    verdict, reasons = _readiness(s)
    if verdict is None:
        refused.append(reasons[0])
    elif verdict == "not_ready":
        refused.append("region_not_ready")
    elif planned and verdict != "ready":
        refused.append("not_caught_up")
    if request.force:
        refused = [r for r in refused if r not in (PLANNED_OVERRIDABLE if planned else OVERRIDABLE)]

    # a peer whose ledger cannot commit cannot hand its writer over: only a failover moves it
    caught_up = verdict == "ready" and s.peer_reachable is True and not s.peer_ledger_failing
    mode = Mode.SWITCHOVER if planned or caught_up else Mode.FAILOVER
    rpo = 0.0 if mode is Mode.SWITCHOVER else _rpo_estimate(s.readiness)
    steps = () if refused else STEPS
    return Plan(action, s.region, mode, tuple(refused), steps, rpo, readiness_reasons=tuple(reasons))


def _readiness(s: Situation) -> tuple[str | None, list[str]]:
    """The verdict to judge by and its reasons; (None, [refusal]) when there is none worth judging."""
    record = s.readiness
    if not record:
        return None, ["no_readiness_record"]
    measured = record.get("measured_at_epoch")
    if not isinstance(measured, int | float) or s.now - float(measured) > s.readiness_max_age_seconds:
        return None, ["readiness_record_stale"]
    return str(record.get("verdict")), [str(r) for r in record.get("reasons", [])]


def _rpo_estimate(record: Mapping[str, Any] | None) -> float | None:
    """What an unplanned failover loses: the ledger's (Aurora's) last measured lag into this region."""
    if not record:
        return None
    aurora = record.get("stores", {}).get("aurora", {})
    for value in (
        aurora.get("lag_seconds"),
        aurora.get("last_measured_lag_seconds"),
        aurora.get("last_known_lag_seconds"),
    ):
        if isinstance(value, int | float):
            return float(value)
    return None
