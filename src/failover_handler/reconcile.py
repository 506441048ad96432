"""Reconciliation after an unplanned failover (DESIGN §4): what was accepted ends committed, exactly once.

Runs in the active region, for each failover epoch that owes it (:class:`tandem_core.control.Owed`), and is
asked again (by the monitor, every run) until it completes. It completes only when **nothing more can
arrive**: the old region answers, has learnt the new epoch (its replica of the control record says so) and
has its processing off, and a processor timeout has passed since that was first seen (a batch that passed
the old region's fence before it learnt the epoch may still be committing). Until then it reports
``waiting`` with what it waits for - and still does every part below, so most of the work is done early.
Every part converges, so running it again finds nothing left to do:

1. **Stranded messages**: the old region's queue is drained into this region's queue
   (:class:`tandem_core.forwarding.QueueForwarder`, until it is empty or the time is up).
2. **Journal replay**: the old region journaled every batch before committing it (``tandem_core.archive``).
   The journal is read **in the old region's own bucket**, not in the replica S3 replication keeps here:
   after an outage the replica is missing whatever was still queued for copying (a backlog that arrives
   minutes later), and after a partition everything the old region wrote while cut off. Lines from
   ``since`` on go through this region's processor (Lambda Invoke, ``{"replay": [...]}``) - the same
   exactly-once path:
   ``committed`` means the ledger lacked it and holds it now, ``duplicate`` that it held it already,
   anything else could not be applied (the reason is reported).
3. **DLQ redrive** (both regions): a message that still parses as a transaction went there for an
   infrastructure reason (its region or database was down for maxReceiveCount receives) and goes to this
   region's queue with ``tandem-redrives`` counted up; one that does not parse stays, with its reason; one
   already redriven once stays too (it was dead-lettered again: the ledger refused it, and another redrive
   would only loop). Transfers carry no balance constraint, so applying them late commutes.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.archive import PREFIX, Journal
from tandem_core.control import ControlStore, Owed
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import LISTED, DlqRedrive, QueueForwarder

REPLAY_BATCH = 100  # journal lines per processor invocation (transaction_processor.processing.MAX_REPLAY)
AWS_ERRORS = (ClientError, BotoCoreError)


@dataclass
class Replayed:
    """What the journal replay did, per *transaction*: a message journaled twice (a batch retried after its
    journal write) is sent once, and a transaction re-applied by one line is not also 'held already'."""

    objects: int = 0
    lines: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)  # transaction id -> committed | duplicate
    could_not: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def reapplied(self) -> list[str]:
        return [tid for tid, outcome in self.outcomes.items() if outcome == "committed"]

    def note(self, transaction_id: str, outcome: str) -> None:
        """Committed wins over duplicate: the ledger lacked it when this run first sent it."""
        if self.outcomes.get(transaction_id) != "committed":
            self.outcomes[transaction_id] = outcome

    def as_dict(self) -> dict[str, Any]:
        reapplied = self.reapplied
        return {
            "objects": self.objects, "lines": self.lines, "reapplied": len(reapplied),
            "reapplied_ids": reapplied[:LISTED], "already_held": len(self.outcomes) - len(reapplied),
            "could_not": self.could_not[:LISTED], "errors": self.errors[:5],
        }  # fmt: skip


def hours(since: datetime, until: datetime) -> Iterator[datetime]:
    """Every hour the journal's keys name from ``since`` to ``until`` (both included)."""
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= until:
        yield hour
        hour += timedelta(hours=1)


@dataclass(frozen=True)
class JournalReplay:
    """A region's journal lines in that region's archive bucket, replayed through this region's processor."""

    s3: Any
    bucket: str
    invoke_processor: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]

    def run(self, old_region: str, since: datetime, until: datetime, deadline: float) -> Replayed:
        done = Replayed()
        journal = Journal(self.s3, self.bucket)
        pending: list[dict[str, Any]] = []
        sent: set[str] = set()  # message ids: a batch retried after its journal write is in two objects
        for key in self._keys(since, until):
            if time.monotonic() > deadline:
                done.errors.append("time ran out: run reconcile again to finish")
                break
            done.objects += 1
            lines = [line for line in journal.replayable(key) if line.get("region") == old_region]
            done.lines += len(lines)
            for line in lines:
                if line["message_id"] not in sent:
                    sent.add(line["message_id"])
                    pending.append({"message_id": line["message_id"], "transaction": line["transaction"]})
            while len(pending) >= REPLAY_BATCH:
                self._replay(pending[:REPLAY_BATCH], done)
                pending = pending[REPLAY_BATCH:]
        if pending:
            self._replay(pending, done)
        return done

    def _keys(self, since: datetime, until: datetime) -> Iterator[str]:
        pages = self.s3.get_paginator("list_objects_v2")
        for hour in hours(since, until):
            for page in pages.paginate(Bucket=self.bucket, Prefix=f"{PREFIX}{hour:%Y/%m/%d/%H}/"):
                for obj in page.get("Contents", []):  # the whole hour: a replica's own time says nothing
                    yield str(obj["Key"])

    def _replay(self, lines: list[dict[str, Any]], done: Replayed) -> None:
        try:
            results = self.invoke_processor(lines)
        except (RuntimeError, *AWS_ERRORS) as exc:
            done.errors.append(" ".join(str(exc).split())[:300])
            return
        for result in results:
            if result.get("outcome") in ("committed", "duplicate"):
                done.note(str(result.get("transaction_id")), str(result["outcome"]))
            else:
                done.could_not.append({k: result.get(k) for k in ("message_id", "transaction_id", "reason")})


@dataclass(frozen=True)
class OldRegion:
    """The region a failover left behind, seen through its own APIs: has it stopped for good?"""

    region: str
    control: ControlStore  # its replica of the control record
    switch: ProcessingSwitch  # its processor's SQS mapping

    def still_going(self, epoch: int) -> list[str]:
        """What keeps it from being finished: empty once it answers, knows ``epoch`` and processes nothing."""
        try:
            record = self.control.read()
            processing = self.switch.is_on()
        except (*AWS_ERRORS, LookupError) as exc:
            return [f"{self.region} to answer ({_line(exc)})"]
        waits = []
        if record.epoch < epoch or record.active_region == self.region:
            waits.append(f"{self.region} to learn epoch {epoch} (its replica: {record.active_region} active at epoch"
                         f" {record.epoch})")  # fmt: skip
        if processing:
            waits.append(f"{self.region}'s processing to be off")
        return waits


@dataclass(frozen=True)
class Reconciler:
    """The parts, in the order that converges: stranded and dead-lettered messages go back to the active
    queue, then the journal fills what the ledger still lacks; and the gate that says when it is complete."""

    region: str
    stranded: QueueForwarder  # the peer's queue -> this region's queue
    dlqs: dict[str, DlqRedrive]  # region -> its DLQ, each redriven to this region's queue
    journals: dict[str, JournalReplay]  # region -> its journal in its own bucket
    old: dict[str, OldRegion]  # the peer, as a region a failover may have left behind
    budget_seconds: float = 60.0
    #: after the old region is seen fenced: its processor's Timeout plus the fence's cache age
    quiet_seconds: float = 35.0

    def run(
        self, owed: Owed, since: datetime, until: datetime, first_fenced: Callable[[float], float] | None,
        clock: Callable[[], float] = time.time,
    ) -> dict[str, Any]:  # fmt: skip
        """The report: each part's counts and what it left; ``waiting_for`` (what must still happen before
        nothing more can arrive); ``complete`` when nothing is waited for and no part hit an error; and
        ``steps`` - each part's start, end, outcome and a one-line summary, for the execution record.
        ``first_fenced(now)`` records (once) and returns when the old region was first seen fenced; None: an
        operator's sweep that owes nothing - the parts run, nothing is waited for."""
        deadline = time.monotonic() + self.budget_seconds
        old_region = owed.old_region
        report: dict[str, Any] = {
            "region": self.region, "old_region": old_region, "epoch": owed.epoch, "since": since.timestamp(),
            "until": until.timestamp(), "dlq": {}, "steps": [],
        }  # fmt: skip

        def part(name: str, work: Callable[[], dict[str, Any]], summary: Callable[[dict[str, Any]], str]) -> None:
            started = clock()
            try:
                result = work()
            except AWS_ERRORS as exc:
                result = {"errors": [_line(exc)]}
            outcome = "failed" if result.get("errors") else "completed"
            detail = "; ".join(result["errors"][:1]) if result.get("errors") else summary(result)
            report["steps"].append({"name": name, "started_at": started, "finished_at": clock(),
                                    "outcome": outcome, "detail": detail})  # fmt: skip
            if name.startswith("redrive_dlq:"):
                report["dlq"][name.split(":", 1)[1]] = result
            else:
                report[name] = result

        waiting: list[str] = []
        if old_region in self.old:  # the gate is read first: what the parts then read is at least that late
            waiting = [] if first_fenced is None else self.old[old_region].still_going(owed.epoch)
            if not waiting and first_fenced is not None:
                quiet_at = first_fenced(clock()) + self.quiet_seconds
                if clock() < quiet_at:
                    waiting.append(f"batches {old_region} had in flight when fenced to end ({self.quiet_seconds:g} s)")
            part("stranded", lambda: self.stranded.drain(limit=1_000_000, deadline=deadline).as_dict(),
                 lambda r: f"{r['moved']} moved from {old_region}'s queue")  # fmt: skip
        for region, dlq in self.dlqs.items():
            part(f"redrive_dlq:{region}", functools.partial(lambda d: d.run(deadline).as_dict(), dlq),
                 lambda r: f"{r['redriven']} redriven, {len(r['left'])} left")  # fmt: skip
        journal = self.journals[old_region]
        part("journal", lambda: journal.run(old_region, since, until, deadline).as_dict(),
             lambda r: f"{r['lines']} lines of {old_region}: {r['reapplied']} re-applied, "
                       f"{r['already_held']} held already, {len(r['could_not'])} could not")  # fmt: skip
        report["waiting_for"] = waiting
        report["complete"] = not waiting and all(step["outcome"] == "completed" for step in report["steps"])
        return report


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def processor_invoker(lambda_: Any, function: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Replay through the processor by Lambda Invoke; RuntimeError with its error (e.g. Fenced) when it fails."""

    def invoke(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reply = lambda_.invoke(FunctionName=function, Payload=json.dumps({"replay": lines}).encode())
        answer = json.loads(reply["Payload"].read() or b"{}")
        if reply.get("FunctionError"):
            raise RuntimeError(f"{function}: {answer.get('errorType')}: {answer.get('errorMessage')}")
        return list(answer.get("replayed", []))

    return invoke
