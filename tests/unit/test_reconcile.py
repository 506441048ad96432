"""Reconciliation's parts on two moto regions: what it reads, moves, redrives and leaves, and that it converges.

The processor's side (re-applying through the ledger) runs for real in tests/twin/test_twin_reconcile.py;
here the replay request's receiver answers as the ledger would for ids it holds, so the journal selection
(which lines, which hours, refused lines skipped) is seen exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from failover_handler.events import Action, Request
from failover_handler.history import ExecutionLog
from failover_handler.metrics import EmfExecutionMetrics
from failover_handler.reconcile import REDRIVES, DlqRedrive, JournalReplay, Reconciler, hours
from failover_handler.service import Facts, FailoverService
from tandem_core.archive import journal_key, journal_lines
from tandem_core.control import ControlStore, NewExecution
from tandem_core.forwarding import QueueForwarder
from tandem_core.models import Entry, parse_transaction
from tests.conftest import transfer
from tests.unit.failover_world import ARCHIVE, DR, PRIMARY, TABLE, World, two_regions

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
    """A journal object as the old region wrote it, in DR's bucket (where S3 replication puts it)."""
    entries = [Entry(parse_transaction(json.dumps(b)), f"m-{b['transaction_id']}") for b in bodies]
    world.clients[DR]["s3"].put_object(
        Bucket=ARCHIVE[DR],
        Key=journal_key(entries, at, region_of_lines),
        Body=journal_lines(entries, region_of_lines, refused),
    )


def reconciler(world: World, ledger: Ledger) -> Reconciler:
    sqs = {r: world.clients[r]["sqs"] for r in (PRIMARY, DR)}
    return Reconciler(
        DR, PRIMARY,
        stranded=QueueForwarder(sqs[PRIMARY], world.queue(PRIMARY), sqs[DR], world.queue(DR)),
        dlqs={DR: DlqRedrive(sqs[DR], world.dlq(DR), sqs[DR], world.queue(DR)),
              PRIMARY: DlqRedrive(sqs[PRIMARY], world.dlq(PRIMARY), sqs[DR], world.queue(DR))},
        journal=JournalReplay(world.clients[DR]["s3"], ARCHIVE[DR], ledger),
    )  # fmt: skip


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
    report = reconciler(world, ledger).run(NOW - timedelta(hours=1), NOW)
    assert report["complete"] is True
    assert (report["journal"]["lines"], report["journal"]["reapplied_ids"]) == (2, [lost["transaction_id"]])
    assert report["journal"]["already_held"] == 1
    assert [s["name"] for s in report["steps"]] == ["stranded", f"redrive_dlq:{DR}", f"redrive_dlq:{PRIMARY}",
                                                    "journal"]  # fmt: skip

    again = reconciler(world, ledger).run(NOW - timedelta(hours=1), NOW)
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
    report = reconciler(world, ledger).run(NOW - timedelta(hours=1), NOW)["journal"]
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
    report = reconciler(world, Ledger(set())).run(NOW - timedelta(hours=1), NOW)
    assert report["stranded"]["moved"] == 1
    assert report["dlq"][PRIMARY]["redriven"] == 1
    assert report["dlq"][DR]["redriven"] == 0
    reasons = sorted(m["reason"].split(":")[0] for m in report["dlq"][DR]["left"])
    assert reasons == ["dead-lettered again after a redrive", "invalid"]
    arrived = sorted(bodies_in(world, DR, world.queue(DR)))
    assert arrived == sorted([(json.dumps(stranded), ""), (json.dumps(infra), "1")])  # redrive counted
    assert bodies_in(world, PRIMARY, world.queue(PRIMARY)) == []
    assert len(bodies_in(world, DR, world.dlq(DR))) == 2  # left where they were, visible at once

    again = reconciler(world, Ledger(set())).run(NOW - timedelta(hours=1), NOW)
    assert (again["stranded"]["moved"], again["dlq"][PRIMARY]["redriven"], again["dlq"][DR]["redriven"]) == (0, 0, 0)


def test_the_service_reconciles_only_in_the_active_region_and_records_it(world: World) -> None:
    db = world.clients[DR]["dynamodb"]
    control = ControlStore(db, TABLE, PRIMARY)
    service = FailoverService(
        world.settings(), DR, control=control, history=ExecutionLog(db, TABLE), runbook=world.runbook(),
        facts=Facts(lambda r: None, lambda: True), metrics=EmfExecutionMetrics(DR),
        reconciler=reconciler(world, Ledger(set())), clock=lambda: NOW.timestamp(),
    )  # fmt: skip
    refused = service.handle(Request(Action.RECONCILE, "operator"))
    assert (refused["outcome"], refused["reasons"]) == ("refused", ["not_active"])  # the primary is active

    control.acquire(NewExecution("x", "failover", "failover", DR), NOW.timestamp(), 150)
    assert service.handle(Request(Action.RECONCILE, "operator"))["reasons"] == ["execution_running"]
    control.finish("x", "completed", NOW.timestamp())
    done = service.handle(Request(Action.RECONCILE, "operator"))
    assert done["outcome"] == "completed", done
    (recorded,) = service.handle(Request(Action.STATUS, "operator"))["executions"]
    assert (recorded["action"], recorded["outcome"]) == ("reconcile", "completed")
    assert set(recorded["report"]) >= {"stranded", "dlq", "journal"}
    assert [step["name"] for step in recorded["steps"]][-1] == "journal"
