"""Reconciliation's parts on two moto regions: what it reads, moves, redrives and leaves, and that it converges.

The processor's side (re-applying through the ledger) runs for real in tests/twin/test_twin_reconcile.py;
here the replay request's receiver answers as the ledger would for ids it holds, so the journal selection
(which lines, which hours, refused lines skipped) is seen exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from failover_handler.events import Action, Request
from failover_handler.history import ExecutionLog
from failover_handler.metrics import EmfExecutionMetrics
from failover_handler.reconcile import JournalReplay, OldRegion, Reconciler, hours
from failover_handler.service import Facts, FailoverService
from tandem_core.archive import journal_key, journal_lines
from tandem_core.control import CONTROL_KEY, ControlStore, NewExecution, Owed
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import REDRIVES, DlqRedrive, QueueForwarder
from tandem_core.models import Entry, parse_transaction
from tests.conftest import transfer
from tests.unit.failover_world import ARCHIVE, DR, FUNCTION, PRIMARY, STATE_PARAMETER, TABLE, World, two_regions

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    with two_regions() as w:
        yield w


class Ledger:
    """The replay receiver: the ids it holds are duplicates, the others are committed (and then held)."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.requests: list[list[dict[str, Any]]] = []

    def __call__(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.requests.append(lines)
        out = []
        for line in lines:
            tid = line["transaction"]["transaction_id"]
            out.append({"message_id": line["message_id"], "transaction_id": tid,
                        "outcome": "duplicate" if tid in self.held else "committed", "reason": None})  # fmt: skip
            self.held.add(tid)
        return out


def journal(world: World, region_of_lines: str, bodies: list[dict[str, Any]], at: datetime,
            refused: dict[str, str] | None = None) -> None:  # fmt: skip
    """A journal object as ``region_of_lines`` wrote it, in its own bucket (reconciliation reads it there)."""
    entries = [Entry(parse_transaction(json.dumps(b)), f"m-{b['transaction_id']}") for b in bodies]
    world.clients[region_of_lines]["s3"].put_object(
        Bucket=ARCHIVE[region_of_lines],
        Key=journal_key(entries, at, region_of_lines),
        Body=journal_lines(entries, region_of_lines, refused),
    )


def reconciler(world: World, ledger: Ledger, quiet: float = 0.0) -> Reconciler:
    sqs = {r: world.clients[r]["sqs"] for r in (PRIMARY, DR)}
    return Reconciler(
        DR,
        stranded=QueueForwarder(sqs[PRIMARY], world.queue(PRIMARY), sqs[DR], world.queue(DR)),
        dlqs={DR: DlqRedrive(sqs[DR], world.dlq(DR), sqs[DR], world.queue(DR)),
              PRIMARY: DlqRedrive(sqs[PRIMARY], world.dlq(PRIMARY), sqs[DR], world.queue(DR))},
        journals={r: JournalReplay(world.clients[r]["s3"], ARCHIVE[r], ledger) for r in (PRIMARY, DR)},
        old={PRIMARY: OldRegion(
            PRIMARY, ControlStore(world.clients[PRIMARY]["dynamodb"], TABLE, PRIMARY),
            ProcessingSwitch(PRIMARY, world.clients[PRIMARY]["lambda"], world.clients[PRIMARY]["ssm"],
                             FUNCTION[PRIMARY], STATE_PARAMETER[PRIMARY]),
        )},
        quiet_seconds=quiet,
    )  # fmt: skip


def fence_the_primary(world: World, epoch: int = 1) -> None:
    """What the old primary looks like once it is back and has caught up: its replica of the control record
    names DR at ``epoch`` and its monitor switched its processing off."""
    world.clients[PRIMARY]["dynamodb"].put_item(TableName=TABLE, Item={
        **CONTROL_KEY, "active_region": {"S": DR}, "epoch": {"N": str(epoch)}, "state": {"S": "idle"},
    })  # fmt: skip
    ProcessingSwitch(PRIMARY, world.clients[PRIMARY]["lambda"], world.clients[PRIMARY]["ssm"], FUNCTION[PRIMARY],
                     STATE_PARAMETER[PRIMARY]).set(enabled=False)  # fmt: skip


OWED = Owed(1, PRIMARY, (NOW - timedelta(minutes=30)).timestamp())


def run(rec: Reconciler, since: datetime = NOW - timedelta(hours=1), first: float | None = None) -> dict[str, Any]:
    return rec.run(OWED, since, NOW, first_fenced=lambda now: now if first is None else first,
                   clock=lambda: NOW.timestamp())  # fmt: skip


def bodies_in(world: World, region: str, queue: str) -> list[tuple[str, str]]:
    got = (
        world.clients[region]["sqs"]
        .receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )
    return [(m["Body"], m.get("MessageAttributes", {}).get(REDRIVES, {}).get("StringValue", "")) for m in got]


def test_the_journal_hours_cover_the_window_inclusively() -> None:
    got = list(hours(NOW - timedelta(hours=2), NOW))
    assert [h.hour for h in got] == [10, 11, 12]


def test_the_old_regions_lines_are_replayed_once_and_nothing_else(world: World) -> None:
    lost, held, own, refused = (transfer("a", "b", amount=f"{i}.00") for i in range(1, 5))
    journal(world, PRIMARY, [lost, held], NOW - timedelta(minutes=50))  # the previous hour
    journal(world, DR, [own], NOW)  # DR's own journal: its ledger has it by construction
    journal(world, PRIMARY, [refused], NOW, refused={f"m-{refused['transaction_id']}": "currency"})
    journal(world, PRIMARY, [transfer("a", "b", amount="9.00")], NOW - timedelta(hours=3))  # before the window
    ledger = Ledger({held["transaction_id"]})
    fence_the_primary(world)
    report = run(reconciler(world, ledger))
    assert report["complete"] is True
    assert (report["journal"]["lines"], report["journal"]["reapplied_ids"]) == (2, [lost["transaction_id"]])
    assert report["journal"]["already_held"] == 1
    assert [s["name"] for s in report["steps"]] == ["stranded", f"redrive_dlq:{DR}", f"redrive_dlq:{PRIMARY}",
                                                    "journal"]  # fmt: skip

    again = run(reconciler(world, ledger))
    assert (again["journal"]["reapplied"], again["journal"]["already_held"]) == (0, 2)


def test_a_message_journaled_twice_is_counted_once_as_reapplied(world: World) -> None:
    """A batch retried after its journal write leaves the same message in two objects (finding 4): the
    report counts transactions, so the one the ledger lacked is re-applied, not 'held already'."""
    retried, other = transfer("a", "b"), transfer("c", "d")
    journal(world, PRIMARY, [retried, other], NOW - timedelta(minutes=5))  # the first try
    journal(world, PRIMARY, [retried], NOW - timedelta(minutes=4))  # its retry: another key, the same message
    held_elsewhere, late = transfer("e", "f"), transfer("g", "h")
    journal(world, PRIMARY, [held_elsewhere], NOW - timedelta(minutes=3))
    journal(world, PRIMARY, [held_elsewhere, late], NOW - timedelta(minutes=2))
    ledger = Ledger({held_elsewhere["transaction_id"]})
    report = run(reconciler(world, ledger))["journal"]
    assert sorted(report["reapplied_ids"]) == sorted(t["transaction_id"] for t in (retried, other, late))
    assert (report["reapplied"], report["already_held"], report["lines"]) == (3, 1, 6)
    assert sum(len(r) for r in ledger.requests) == 4  # each message sent once


def test_stranded_and_dead_lettered_messages_reach_the_active_queue_and_poison_stays(world: World) -> None:
    sqs = {r: world.clients[r]["sqs"] for r in (PRIMARY, DR)}
    stranded, infra, redriven_before = transfer("a", "b"), transfer("c", "d"), transfer("e", "f")
    sqs[PRIMARY].send_message(QueueUrl=world.queue(PRIMARY), MessageBody=json.dumps(stranded))
    sqs[PRIMARY].send_message(QueueUrl=world.dlq(PRIMARY), MessageBody=json.dumps(infra))
    sqs[DR].send_message(QueueUrl=world.dlq(DR), MessageBody="not json")
    sqs[DR].send_message(
        QueueUrl=world.dlq(DR), MessageBody=json.dumps(redriven_before),
        MessageAttributes={REDRIVES: {"DataType": "Number", "StringValue": "1"}},
    )  # fmt: skip
    report = run(reconciler(world, Ledger(set())))
    assert report["stranded"]["moved"] == 1
    assert report["dlq"][PRIMARY]["redriven"] == 1
    assert report["dlq"][DR]["redriven"] == 0
    reasons = sorted(m["reason"].split(":")[0] for m in report["dlq"][DR]["left"])
    assert reasons == ["dead-lettered again after a redrive", "invalid"]
    arrived = sorted(bodies_in(world, DR, world.queue(DR)))
    assert arrived == sorted([(json.dumps(stranded), ""), (json.dumps(infra), "1")])  # redrive counted
    assert bodies_in(world, PRIMARY, world.queue(PRIMARY)) == []
    assert len(bodies_in(world, DR, world.dlq(DR))) == 2  # left where they were, visible at once

    again = run(reconciler(world, Ledger(set())))
    assert (again["stranded"]["moved"], again["dlq"][PRIMARY]["redriven"], again["dlq"][DR]["redriven"]) == (0, 0, 0)


def test_the_service_reconciles_only_in_the_active_region_and_records_it(world: World) -> None:
    db = world.clients[DR]["dynamodb"]
    control = ControlStore(db, TABLE, PRIMARY)
    clock = [NOW.timestamp()]
    service = FailoverService(
        world.settings(), DR, control=control, history=ExecutionLog(db, TABLE), runbook=world.runbook(),
        facts=Facts(lambda r: None, lambda: True), metrics=EmfExecutionMetrics(DR),
        reconciler=reconciler(world, Ledger(set()), quiet=35.0), clock=lambda: clock[0],
    )  # fmt: skip
    refused = service.handle(Request(Action.RECONCILE, "operator"))
    assert (refused["outcome"], refused["reasons"]) == ("refused", ["not_active"])  # the primary is active

    control.acquire(NewExecution("x", "failover", "failover", DR), NOW.timestamp(), 150)
    assert service.handle(Request(Action.RECONCILE, "operator"))["reasons"] == ["execution_running"]
    control.finish("x", "completed", NOW.timestamp())
    waiting = service.handle(Request(Action.RECONCILE, "operator"))
    assert waiting["outcome"] == "waiting"
    assert waiting["execution"]["reasons"] == [
        f"{PRIMARY} to learn epoch 1 (its replica: {PRIMARY} active at epoch 0)", f"{PRIMARY}'s processing to be off",
    ]  # fmt: skip
    assert control.read().owed  # still owed: the monitor asks again
    fence_the_primary(world)
    clock[0] += 10
    assert service.handle(Request(Action.RECONCILE, "operator"))["execution"]["reasons"] == [
        f"batches {PRIMARY} had in flight when fenced to end (35 s)"
    ]
    clock[0] += 35
    done = service.handle(Request(Action.RECONCILE, "operator"))
    assert done["outcome"] == "completed", done
    assert control.read().owed == ()
    recorded = service.handle(Request(Action.STATUS, "operator"))["executions"]
    assert [(r["action"], r["outcome"], r["epoch"]) for r in recorded] == [
        ("reconcile", "completed", 1), ("reconcile", "waiting", 1), ("reconcile", "waiting", 1),
    ]  # fmt: skip
    assert set(recorded[0]["report"]) >= {"stranded", "dlq", "journal", "waiting_for"}
    assert [step["name"] for step in recorded[0]["steps"]][-1] == "journal"


def test_what_the_old_region_commits_until_it_stops_is_replayed_from_its_own_bucket(world: World) -> None:
    """Finding 1 of the backlog issue: reconciliation ran once, too early - before the S3 backlog arrived
    and while a partitioned old primary still committed - and was marked complete. Now it reads the old
    region's journal where it is written, and completes only once that region has stopped for good."""
    ledger = Ledger(set())
    rec = reconciler(world, ledger, quiet=35.0)
    early = transfer("a", "b")
    journal(world, PRIMARY, [early], NOW - timedelta(minutes=20))  # never copied to DR's bucket
    first = run(rec)
    assert (first["complete"], first["journal"]["reapplied_ids"]) == (False, [early["transaction_id"]])
    late = transfer("c", "d")  # committed by the old primary while it still believed it was active
    journal(world, PRIMARY, [late], NOW - timedelta(minutes=1))
    fence_the_primary(world)
    quiet = run(rec, first=NOW.timestamp() - 10)
    assert quiet["complete"] is False
    assert quiet["journal"]["reapplied_ids"] == [late["transaction_id"]]
    done = run(rec, first=NOW.timestamp() - 35)
    assert (done["complete"], done["waiting_for"], done["journal"]["reapplied"]) == (True, [], 0)
    assert done["journal"]["already_held"] == 2


def test_an_old_region_that_does_not_answer_keeps_reconciliation_waiting(world: World) -> None:
    fence_the_primary(world)
    rec = reconciler(world, Ledger(set()))
    gone = replace(rec, old={PRIMARY: replace(rec.old[PRIMARY], control=ControlStore(Unreachable(), TABLE, PRIMARY))})
    report = run(gone)
    assert report["complete"] is False
    assert report["waiting_for"][0].startswith(f"{PRIMARY} to answer (EndpointConnectionError")


class Unreachable:
    def get_item(self, **_: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
