"""The control record: which region is active, at which epoch, and the one failover execution that may run.

One item of the global table, ``pk=CONTROL, sk=ACTIVE``. The failover handler of the region being activated
writes it in its own region (DESIGN §4 rule 1) with conditional writes, which is the lock (rule 4): however
many invocations race, exactly one :meth:`ControlStore.acquire` succeeds. Taking the lock already moves
``active_region`` to the target and bumps ``epoch`` - the fence (rule 5): from that moment a processor that
reads its own replica and finds another region active does not commit.

An execution holds a lease (``lease_until``) that it renews with every completed step. An invocation that
finds a running execution whose lease has lapsed (the holder crashed or timed out) takes the lease over
with the same execution id and resumes after the completed steps (``steps_done``); one that finds the lease
live does nothing. The record stays ``running`` until the execution finishes, so a failed step is resumed,
never forgotten. Before any execution has run, no record exists: the primary-role region is active at epoch 0.

**Reconciliation is owed per failover epoch.** Taking the lock for an unplanned failover adds
``<epoch>|<old region>|<started at>`` to the string set ``owed`` in the same write. A completed reconciliation
is recorded in an item of its own, ``pk=CONTROL, sk=EPOCH#<epoch>`` (:meth:`ControlStore.mark_reconciled`,
beside when it first saw the old region fenced): the global table resolves concurrent writes by replacing the
whole item with the later one, so reconciliation never writes ``CONTROL/ACTIVE`` - a failback's lock taken in
the other region meanwhile cannot be erased by it, nor can it erase the mark. Only executions write
``ACTIVE``; the next one drops the entries already reconciled. A later execution - a switchover, a forced
failback - does not erase what is owed: whoever is active then still owes it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

CONTROL_KEY = {"pk": {"S": "CONTROL"}, "sk": {"S": "ACTIVE"}}


def epoch_key(epoch: int) -> dict[str, Any]:
    """The item of one failover epoch's reconciliation (beside ``CONTROL/ACTIVE``, never inside it)."""
    return {"pk": {"S": "CONTROL"}, "sk": {"S": f"EPOCH#{epoch}"}}


_CONDITION_FAILED = "ConditionalCheckFailedException"


def primary_region(region: str, role: str, peer_region: str) -> str:
    """The primary-role region, seen from ``region`` with ``role``: who is active before any execution ran."""
    return region if role == "primary" else peer_region


@dataclass(frozen=True, order=True)
class Owed:
    """A reconciliation owed: the unplanned failover of ``epoch`` left ``old_region`` behind at ``since``."""

    epoch: int
    old_region: str
    since: float

    @property
    def token(self) -> str:
        return f"{self.epoch}|{self.old_region}|{self.since!r}"

    @staticmethod
    def parse(token: str) -> Owed:
        epoch, region, since = token.split("|")
        return Owed(int(epoch), region, float(since))

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "old_region": self.old_region, "since": self.since}


class State(enum.StrEnum):
    IDLE = "idle"
    RUNNING = "running"


@dataclass(frozen=True)
class ControlRecord:
    active_region: str
    epoch: int
    state: State = State.IDLE
    execution_id: str | None = None
    action: str | None = None
    mode: str | None = None
    previous_region: str | None = None
    steps_done: tuple[str, ...] = ()
    lease_until: float | None = None
    started_at: float | None = None
    last_finished_at: float | None = None
    last_outcome: str | None = None
    reconciled_epoch: int | None = None  # the epoch whose unplanned failover reconciliation completed last
    owed: tuple[Owed, ...] = ()  # reconciliations owed, oldest epoch first
    #: listed in ``owed`` of the item, but reconciled (their epoch items say so): the next execution drops them
    settled: tuple[Owed, ...] = ()
    #: epoch -> when reconciliation first saw the old region fenced (its in-flight batches end a timeout later)
    old_fenced_at: Mapping[int, float] = field(default_factory=dict)
    exists: bool = True  # False: the implicit record of a deployment where nothing has run yet

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_region": self.active_region,
            "epoch": self.epoch,
            "state": self.state.value,
            "execution_id": self.execution_id,
            "action": self.action,
            "mode": self.mode,
            "previous_region": self.previous_region,
            "steps_done": list(self.steps_done),
            "lease_until": self.lease_until,
            "started_at": self.started_at,
            "last_finished_at": self.last_finished_at,
            "last_outcome": self.last_outcome,
            "reconciled_epoch": self.reconciled_epoch,
            "owed": [o.as_dict() for o in self.owed],
        }

    @property
    def awaits_reconciliation(self) -> bool:
        """A reconciliation is owed and no execution runs (reconciliation waits for it to finish)."""
        return self.state is State.IDLE and bool(self.owed)


class LockRefused(RuntimeError):
    """The lock was not ours to take: ``reason`` says why (machine-readable), ``record`` is what holds it."""

    def __init__(self, reason: str, record: ControlRecord) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


@dataclass(frozen=True)
class Acquired:
    """The lock is ours: a new execution (``resumed`` False) or a lapsed one taken over (True)."""

    record: ControlRecord
    resumed: bool


@dataclass(frozen=True)
class NewExecution:
    execution_id: str
    action: str
    mode: str
    target_region: str
    min_delay_seconds: float = 0.0  # since the last execution finished; 0 = no minimum (an operator's force)


def _n(value: Any) -> float | None:
    return None if value is None else float(value["N"])


def from_item(item: Mapping[str, Any]) -> ControlRecord:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item and "S" in item[name] else None

    return ControlRecord(
        active_region=s("active_region") or "",
        epoch=int(item["epoch"]["N"]) if "epoch" in item else 0,
        state=State(s("state") or State.IDLE.value),
        execution_id=s("execution_id"),
        action=s("action"),
        mode=s("mode"),
        previous_region=s("previous_region"),
        steps_done=tuple(v["S"] for v in item.get("steps_done", {}).get("L", [])),
        lease_until=_n(item.get("lease_until")),
        started_at=_n(item.get("started_at")),
        last_finished_at=_n(item.get("last_finished_at")),
        last_outcome=s("last_outcome"),
        reconciled_epoch=int(item["reconciled_epoch"]["N"]) if "reconciled_epoch" in item else None,
        owed=_owed(item),
        old_fenced_at=_fenced(item),
    )


def _fenced(item: Mapping[str, Any]) -> dict[int, float]:
    """Written by releases before the epoch items existed (an attribute per epoch on ACTIVE)."""
    return {int(k.removeprefix(_FENCED)): float(v["N"]) for k, v in item.items() if k.startswith(_FENCED)}


_FENCED = "old_fenced_at_"


def epoch_keys(record: ControlRecord) -> list[dict[str, Any]]:
    """The epoch items to read beside ``record``: one per entry its item lists as owed (none: no read)."""
    return [epoch_key(o.epoch) for o in record.owed]


def settle(record: ControlRecord, epoch_items: Iterable[Mapping[str, Any]]) -> ControlRecord:
    """``record`` with what its epoch items say: reconciled entries move from ``owed`` to ``settled``, and
    when each old region was first seen fenced."""
    by_epoch = {int(i["sk"]["S"].removeprefix("EPOCH#")): i for i in epoch_items}
    done = tuple(o for o in record.owed if "reconciled_at" in by_epoch.get(o.epoch, {}))
    fenced = dict(record.old_fenced_at)
    fenced.update({e: float(i["old_fenced_at"]["N"]) for e, i in by_epoch.items() if "old_fenced_at" in i})
    latest = max([o.epoch for o in done], default=None)
    reconciled = record.reconciled_epoch if latest is None else max(latest, record.reconciled_epoch or 0)
    return replace(
        record, owed=tuple(o for o in record.owed if o not in done), settled=done,
        old_fenced_at={e: t for e, t in fenced.items() if e not in {o.epoch for o in done}},
        reconciled_epoch=reconciled,
    )  # fmt: skip


def _owed(item: Mapping[str, Any]) -> tuple[Owed, ...]:
    """The owed set; a record written before it existed owes its last completed unplanned failover."""
    if "owed" in item:
        return tuple(sorted(Owed.parse(token) for token in item["owed"]["SS"]))
    legacy = (
        item.get("mode", {}).get("S") == "failover" and item.get("last_outcome", {}).get("S") == "completed"
        and item.get("reconciled_epoch", {}).get("N") != item.get("epoch", {}).get("N")
        and "previous_region" in item and "started_at" in item
    )  # fmt: skip
    if not legacy:
        return ()
    return (Owed(int(item["epoch"]["N"]), item["previous_region"]["S"], float(item["started_at"]["N"])),)


class ControlStore:
    """The control record in this region's replica of the global table (strongly consistent reads)."""

    def __init__(self, dynamodb: Any, table: str, initial_active_region: str) -> None:
        """``initial_active_region``: who is active before any execution has written the record (the primary)."""
        self._db = dynamodb
        self._table = table
        self._initial = initial_active_region

    def read(self) -> ControlRecord:
        item = self._db.get_item(TableName=self._table, Key=CONTROL_KEY, ConsistentRead=True).get("Item")
        if item is None:
            return ControlRecord(active_region=self._initial, epoch=0, exists=False)
        return self.settled(from_item(item))

    def settled(self, record: ControlRecord) -> ControlRecord:
        """``record`` (as its item says) with its epoch items read: one more call, only when something is owed."""
        keys = epoch_keys(record)
        if not keys:
            return record
        response = self._db.batch_get_item(RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}})
        if response.get("UnprocessedKeys"):
            raise RuntimeError("DynamoDB left reconciliation items unread")
        return settle(record, response.get("Responses", {}).get(self._table, []))

    def acquire(self, new: NewExecution, now: float, lease_seconds: float) -> Acquired:
        """Start ``new``, or take over a running execution whose lease lapsed; LockRefused otherwise.

        A new execution needs: no execution running, the minimum delay since the last one passed, and the
        target not already active. It moves ``active_region`` to the target and bumps ``epoch`` in the same
        conditional write, so the fence is up the moment the lock is taken.
        """
        current = self.read()
        if current.state is State.RUNNING and current.execution_id is not None:
            return self._take_over(current, new, now, lease_seconds)
        values: dict[str, Any] = {
            ":target": {"S": new.target_region},
            ":running": {"S": State.RUNNING.value},
            ":id": {"S": new.execution_id},
            ":action": {"S": new.action},
            ":mode": {"S": new.mode},
            ":previous": {"S": current.active_region},
            ":empty": {"L": []},
            ":lease": {"N": repr(now + lease_seconds)},
            ":now": {"N": repr(now)},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":earliest": {"N": repr(now - new.min_delay_seconds)},
            ":read_epoch": {"N": str(current.epoch)},
        }
        condition = (
            "(attribute_not_exists(#state) OR #state <> :running)"
            " AND (attribute_not_exists(last_finished_at) OR last_finished_at <= :earliest)"
            " AND (attribute_not_exists(active_region) OR active_region <> :target)"
            " AND (attribute_not_exists(epoch) OR epoch = :read_epoch)"  # the epoch the owed entry names
        )
        # what is still owed, plus (unplanned) what the old region leaves behind now; reconciled entries go
        owed = {o.token for o in current.owed} | (
            {Owed(current.epoch + 1, current.active_region, now).token} if new.mode == "failover" else set()
        )
        owe = " REMOVE owed"
        if owed:
            owe = ", owed = :owed"
            values[":owed"] = {"SS": sorted(owed)}
        if current.reconciled_epoch is not None:  # the settled entries it drops no longer say which epoch
            owe = ", reconciled_epoch = :reconciled" + owe
            values[":reconciled"] = {"N": str(current.reconciled_epoch)}
        if not current.exists and current.active_region == new.target_region:
            raise LockRefused("already_active", current)
        try:
            response = self._db.update_item(
                TableName=self._table, Key=CONTROL_KEY,
                UpdateExpression=(
                    "SET active_region = :target, epoch = if_not_exists(epoch, :zero) + :one, #state = :running,"
                    " execution_id = :id, #action = :action, #mode = :mode, previous_region = :previous,"
                    " steps_done = :empty, lease_until = :lease, started_at = :now" + owe
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state", "#action": "action", "#mode": "mode"},
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _CONDITION_FAILED:
                raise
            raise LockRefused(_why_refused(self.read(), new, now), self.read()) from None
        return Acquired(from_item(response["Attributes"]), resumed=False)

    def _take_over(self, current: ControlRecord, new: NewExecution, now: float, lease_seconds: float) -> Acquired:
        """Only the region the execution activates takes it over (its steps act for that region). ``new``'s mode
        replaces a recorded switchover only by a failover (the peer is gone); that failover owes reconciliation."""
        if current.active_region != new.target_region:
            raise LockRefused("execution_for_other_region", current)
        if current.lease_until is not None and current.lease_until > now:
            raise LockRefused("execution_running", current)
        update = "SET lease_until = :lease"
        values: dict[str, Any] = {
            ":now": {"N": repr(now)}, ":lease": {"N": repr(now + lease_seconds)}, ":target": {"S": new.target_region},
        }  # fmt: skip
        if current.mode == "switchover" and new.mode == "failover" and current.previous_region is not None:
            update += ", #mode = :mode ADD owed :owed"
            values[":mode"] = {"S": "failover"}
            since = current.started_at if current.started_at is not None else now
            values[":owed"] = {"SS": [Owed(current.epoch, current.previous_region, since).token]}
        try:
            record = self._as_holder(
                str(current.execution_id), update, values, also="lease_until <= :now AND active_region = :target",
                names={"#mode": "mode"} if "#mode" in update else None,
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _CONDITION_FAILED:
                raise
            raise LockRefused("execution_running", self.read()) from None  # another invocation took it first
        return Acquired(record, resumed=True)

    def confirm(
        self, execution_id: str, peer: ControlStore | None, *, timeout: float, clock: Callable[[], float],
        sleep: Callable[[float], None], peer_errors: tuple[type[BaseException], ...] = (ClientError, BotoCoreError),
    ) -> str:  # fmt: skip
        """Before a new execution acts: the lock must hold in both replicas. Two regions can each take it in
        their own replica at once (conditions are regional); the global table then keeps the later write whole
        in both, so exactly one execution id survives. Waits until the peer's replica shows ours (said), or
        refuses (LockRefused ``lost_to_concurrent_execution``) once ours is gone from our own replica - nothing
        has run yet. A peer that does not answer cannot race us now (said); one that shows no other running
        execution by ``timeout`` only has not received ours yet (said)."""
        deadline = clock() + timeout
        while True:
            own = self.read()
            if own.execution_id != execution_id or own.state is not State.RUNNING:
                raise LockRefused("lost_to_concurrent_execution", own)
            if peer is None:
                return "no peer replica configured"
            try:
                theirs = peer.read()
            except peer_errors:
                return "the peer's replica does not answer: nothing there can race this execution now"
            if theirs.execution_id == execution_id:
                return "held in both replicas"
            rival = theirs.state is State.RUNNING and theirs.execution_id != own.execution_id
            if clock() >= deadline:
                if rival:  # replication has not settled who won: act for nobody now; should ours win after
                    self.release(execution_id, clock())  # all, its lapsed lease lets the monitor resume it
                    raise LockRefused("lost_to_concurrent_execution", theirs)
                return f"the peer's replica has not received it in {timeout:g} s (no other execution there)"
            sleep(0.2)

    def step_done(self, execution_id: str, step: str, now: float, lease_seconds: float) -> None:
        """Record a completed step and renew the lease; fails if the execution is no longer ours."""
        self._as_holder(
            execution_id, "SET steps_done = list_append(steps_done, :step), lease_until = :lease",
            {":step": {"L": [{"S": step}]}, ":lease": {"N": repr(now + lease_seconds)}},
        )  # fmt: skip

    def old_region_fenced(self, owed: Owed, now: float) -> float:
        """When reconciliation first saw ``owed``'s old region fenced (``now`` the first time); kept in the
        epoch's item, so the wait for the old region's in-flight batches survives between runs."""
        response = self._db.update_item(
            TableName=self._table, Key=epoch_key(owed.epoch),
            UpdateExpression="SET old_fenced_at = if_not_exists(old_fenced_at, :now), old_region = :r",
            ExpressionAttributeValues={":now": {"N": repr(now)}, ":r": {"S": owed.old_region}},
            ReturnValues="ALL_NEW",
        )  # fmt: skip
        return float(response["Attributes"]["old_fenced_at"]["N"])

    def mark_reconciled(self, owed: Owed, now: float | None = None) -> bool:
        """Reconciliation of ``owed`` completed, in the epoch's own item (never ``ACTIVE``: see the module);
        False when it was not owed (any more): nothing written."""
        if owed not in self.read().owed:
            return False
        try:
            self._db.update_item(
                TableName=self._table, Key=epoch_key(owed.epoch),
                UpdateExpression="SET reconciled_at = :now, old_region = :r",
                ConditionExpression="attribute_not_exists(reconciled_at)",
                ExpressionAttributeValues={":now": {"N": repr(time.time() if now is None else now)},
                                           ":r": {"S": owed.old_region}},
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
                return False
            raise
        return True

    def release(self, execution_id: str, now: float) -> None:
        """Let the lease lapse now (a step failed): the next invocation resumes at once."""
        self._as_holder(execution_id, "SET lease_until = :now", {":now": {"N": repr(now)}})

    def finish(self, execution_id: str, outcome: str, now: float) -> ControlRecord:
        """The execution is over: the lock is free again and the minimum delay counts from now."""
        return self._as_holder(
            execution_id, "SET #state = :idle, last_finished_at = :now, last_outcome = :outcome REMOVE lease_until",
            {":idle": {"S": State.IDLE.value}, ":now": {"N": repr(now)}, ":outcome": {"S": outcome}},
        )  # fmt: skip

    def _as_holder(
        self, execution_id: str, update: str, values: dict[str, Any], also: str = "",
        names: Mapping[str, str] | None = None,
    ) -> ControlRecord:  # fmt: skip
        """An update only the running execution ``execution_id`` may make (ConditionalCheckFailed otherwise)."""
        condition = "#state = :running AND execution_id = :id" + (f" AND {also}" if also else "")
        response = self._db.update_item(
            TableName=self._table, Key=CONTROL_KEY, UpdateExpression=update, ConditionExpression=condition,
            ExpressionAttributeNames={"#state": "state", **(names or {})},
            ExpressionAttributeValues={**values, ":running": {"S": State.RUNNING.value}, ":id": {"S": execution_id}},
            ReturnValues="ALL_NEW",
        )  # fmt: skip
        return from_item(response["Attributes"])


def _why_refused(record: ControlRecord, new: NewExecution, now: float) -> str:
    if record.state is State.RUNNING:
        return "execution_running"
    if record.active_region == new.target_region:
        return "already_active"
    if record.last_finished_at is not None and record.last_finished_at > now - new.min_delay_seconds:
        return "minimum_delay_not_passed"
    return "lock_condition_failed"
