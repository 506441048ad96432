"""The durable ingress: what a region accepts is recorded where the other region can read it without it.

A message the ingress accepted lives in that region's queue until it is processed. When the region dies,
what its queue holds is out of reach - for hours in a long outage, for good past the queue's retention - and
the journal cannot help: it records what was processed, not what was accepted. With the durable ingress on,
``POST /transactions`` goes through :class:`Intake`: the body is first written to the DynamoDB global table
(``pk = ACCEPTED#<region>#<minute>``, ``sk = <accepted at>#<request id>``, expiring after ``ttl_seconds``),
then sent to the queue, and the producer gets 200 only when both hold it. DynamoDB replicates the item to
the other region within about a second; after an unplanned failover the new active region replays what the
old one accepted and nothing has applied yet (:func:`replay_accepted`) through its own queue - the same
exactly-once path, so a message applied twice is a duplicate, never a second transfer.

What it costs per message: one more write (and its replicated write), one function invocation on the write
path (see README, "Costs"); ``DurableIngress=disabled`` keeps the direct queue integration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.models import InvalidMessage, parse_transaction
from tandem_core.status import status_key

PREFIX = "ACCEPTED#"
#: the largest body SQS takes (what the direct integration would have refused too)
MAX_BODY_BYTES = 256 * 1024
LISTED = 200  # ids kept in a report


class RejectedBody(ValueError):
    """A body the ingress refuses before recording anything (HTTP 4xx): empty or larger than a message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def partition(region: str, at: datetime) -> str:
    """One partition per region and minute: a replay reads a window minute by minute."""
    return f"{PREFIX}{region}#{at.astimezone(UTC):%Y-%m-%dT%H:%M}"


def minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    minute = start.astimezone(UTC).replace(second=0, microsecond=0)
    while minute <= end:
        yield minute
        minute += timedelta(minutes=1)


@dataclass(frozen=True)
class AcceptedLog:
    """The accepted messages in the global table (this region's replica)."""

    dynamodb: Any
    table: str
    ttl_seconds: int = 2 * 86400

    def record(self, region: str, body: str, request_id: str, at: datetime) -> None:
        self.dynamodb.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": partition(region, at)}, "sk": {"S": f"{at.astimezone(UTC).isoformat()}#{request_id}"},
                "body": {"S": body}, "expires_at": {"N": str(int(at.timestamp()) + self.ttl_seconds)},
            },
        )  # fmt: skip

    def between(self, region: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """What ``region`` recorded from ``start`` to ``end`` (whole minutes), oldest first."""
        pages = self.dynamodb.get_paginator("query")
        for minute in minutes(start, end):
            for page in pages.paginate(
                TableName=self.table, KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": partition(region, minute)}}, ConsistentRead=False,
            ):  # fmt: skip
                yield from page.get("Items", [])


@dataclass(frozen=True)
class Accepted:
    message_id: str
    durable_in_peer: bool  # recorded in the other region's replica before the answer


@dataclass(frozen=True)
class Intake:
    """``POST /transactions``: recorded in the other region's replica (else this one's), then queued."""

    log: AcceptedLog  # this region's replica
    peer_log: AcceptedLog | None  # the other region's (short timeouts, one attempt); None: one region
    sqs: Any
    queue_url: str
    region: str
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def accept(self, body: str | None, request_id: str) -> Accepted:
        """RejectedBody for a body no queue would take (nothing recorded then); AWS errors of this region
        propagate (the producer retries: the same transaction is a duplicate)."""
        if not body:
            raise RejectedBody(400, "the message body is empty")
        if len(body.encode()) > MAX_BODY_BYTES:
            raise RejectedBody(413, f"the message body is larger than {MAX_BODY_BYTES} bytes")
        at = self.clock()
        durable = False
        if self.peer_log is not None:
            try:
                self.peer_log.record(self.region, body, request_id, at)
                durable = True
            except (ClientError, BotoCoreError):
                durable = False
        if not durable:
            self.log.record(self.region, body, request_id, at)
        message_id = str(self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)["MessageId"])
        return Accepted(message_id, durable)


@dataclass
class Replayed:
    recorded: int = 0
    applied_before: int = 0  # a status item exists: committed somewhere (and journaled there)
    sent: list[str] = field(default_factory=list)  # transaction ids sent to this region's queue
    unparsable: int = 0  # poison: the old region dead-lettered it; nothing to apply

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "applied_before": self.applied_before, "sent": len(self.sent),
                "sent_ids": self.sent[:LISTED], "unparsable": self.unparsable}  # fmt: skip


@dataclass(frozen=True)
class AcceptedReplay:
    """After an unplanned failover, in the new active region: what the old region accepted in the last
    ``window_seconds`` goes to this region's queue - all of what it accepted in the last ``recent_seconds``,
    and of the older only what nothing has applied."""

    log: AcceptedLog
    sqs: Any
    queue_url: str
    window_seconds: float = 3600.0
    #: a status item says a transaction was committed somewhere - but not that this region's ledger has it: a
    #: commit the old writer made in its last seconds replicated its status item and lost its row at the
    #: promotion. Within this many seconds of the failover (the replication lag, with a wide margin) every
    #: accepted message is sent; the ledger makes a repeat a duplicate.
    recent_seconds: float = 60.0

    def run(self, old_region: str, now: datetime, deadline: float,
            monotonic: Callable[[], float] = time.monotonic) -> Replayed:  # fmt: skip
        """Older than ``recent_seconds``, no status item means applied nowhere (and a transaction committed
        anywhere that long ago reached this region's ledger too, or its journal covers it); one still in the
        old region's queue comes back by forwarding too: a duplicate for the ledger."""
        done = Replayed()
        recent_since = now - timedelta(seconds=self.recent_seconds)
        pending: dict[str, tuple[str, bool]] = {}  # transaction id -> (body, recent)
        for item in self.log.between(old_region, now - timedelta(seconds=self.window_seconds), now):
            if monotonic() > deadline:
                raise TimeoutError(f"time ran out after {done.recorded} accepted messages of {old_region}")
            done.recorded += 1
            body = item["body"]["S"]
            recent = datetime.fromisoformat(item["sk"]["S"].split("#", 1)[0]) >= recent_since
            try:
                tid = parse_transaction(body).transaction_id
            except InvalidMessage:
                done.unparsable += 1
                continue
            if tid not in pending or recent:
                pending[tid] = (body, recent or pending.get(tid, ("", False))[1])
        older = sorted(tid for tid, (_, recent) in pending.items() if not recent)
        held = _with_status(self.log.dynamodb, self.log.table, older)
        done.applied_before = len(held)
        unsent = sorted(tid for tid in pending if tid not in held)
        for i in range(0, len(unsent), 10):
            chunk = unsent[i : i + 10]
            entries = [{"Id": str(n), "MessageBody": pending[t][0]} for n, t in enumerate(chunk)]
            result = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if result.get("Failed"):
                first = result["Failed"][0]
                raise RuntimeError(f"the queue refused {len(result['Failed'])} message(s): {first.get('Code')}")
            done.sent += chunk
        return done


def _with_status(dynamodb: Any, table: str, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 100):
        request: dict[str, Any] = {table: {"Keys": [status_key(t) for t in ids[i : i + 100]],
                                           "ProjectionExpression": "pk"}}  # fmt: skip
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            found |= {item["pk"]["S"].removeprefix("TXN#") for item in response["Responses"].get(table, [])}
            request = response.get("UnprocessedKeys") or {}
    return found
