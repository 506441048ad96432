"""Forwarding: what lands in the queue of a region that is not active goes to the active region's queue.

DNS follows ingress health before any failover decision, and a restored old primary still holds what it
had, so a region that is not active may find messages in its queue (DESIGN §4, "nothing stranded"). They
are moved with the same body; the ledger's idempotency makes a message forwarded twice harmless. A message
is deleted here only after the active region's queue accepted it, so a failure half-way loses nothing:
what was not accepted becomes visible again after the short visibility timeout and the next run retries.

Dead letters are redriven the same way (:class:`DlqRedrive`): a message that still parses as a transaction
went to a DLQ for an infrastructure reason - its region fenced, its database down for maxReceiveCount
receives, a forward that failed - and goes to the active region's queue with ``tandem-redrives`` counted up;
one that does not parse stays, with its reason; one already redriven once stays too (it was dead-lettered
again: the ledger refused it, and another redrive would only loop). Reconciliation redrives both regions'
DLQs; the monitor of a region that is not active redrives its own as soon as the active region answers, so
nothing an outage or a fence pushed there waits for an operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.models import InvalidMessage, parse_transaction

REDRIVES = "tandem-redrives"  # message attribute: how often a message was redriven from a DLQ
AWS_ERRORS = (ClientError, BotoCoreError)
LISTED = 200  # ids kept per list in a report (a DynamoDB item holds 400 KB); the counts are always complete

#: how long a received message stays invisible while it is being forwarded (a failed forward retries soon)
IN_FLIGHT_SECONDS = 30


@dataclass
class Forwarded:
    """What one drain did: messages moved, messages the active region did not accept (left here)."""

    moved: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"moved": self.moved, "refused": self.refused, "errors": self.errors[:3]}


@dataclass(frozen=True)
class QueueForwarder:
    """Moves messages from this region's queue to the active region's queue."""

    sqs: Any
    queue_url: str
    peer_sqs: Any  # the active region's SQS (short timeouts: it may be the region that is coming back)
    peer_queue_url: str

    def drain(self, *, limit: int, deadline: float, clock: Callable[[], float] = time.monotonic) -> Forwarded:
        """Forward up to ``limit`` messages, stopping when the queue is empty or ``deadline`` passes."""
        done = Forwarded()
        while done.moved + done.refused < limit and clock() < deadline:
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, limit - done.moved - done.refused),
                VisibilityTimeout=IN_FLIGHT_SECONDS, WaitTimeSeconds=0,
            ).get("Messages", [])  # fmt: skip
            if not received:
                break
            by_id = {str(i): m for i, m in enumerate(received)}
            sent = self.peer_sqs.send_message_batch(
                QueueUrl=self.peer_queue_url,
                Entries=[{"Id": i, "MessageBody": m["Body"]} for i, m in by_id.items()],
            )
            accepted = [by_id[e["Id"]] for e in sent.get("Successful", [])]
            for failure in sent.get("Failed", []):
                done.errors.append(f"{failure.get('Code')}: {failure.get('Message', '')}".strip())
            if accepted:
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(accepted)],
                )
            done.moved += len(accepted)
            done.refused += len(received) - len(accepted)
            if len(accepted) < len(received):
                break  # the active region refuses: the rest waits for the next run
        return done


@dataclass
class Redriven:
    redriven: int = 0
    left: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"redriven": self.redriven, "left": self.left[:LISTED], "errors": self.errors[:5]}


@dataclass(frozen=True)
class DlqRedrive:
    """One region's DLQ: infrastructure failures back to the active queue, poison left with its reason."""

    sqs: Any
    dlq_url: str
    target_sqs: Any
    target_queue_url: str

    def run(self, deadline: float) -> Redriven:
        done = Redriven()
        seen: set[str] = set()
        kept: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            received = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30,
                MessageAttributeNames=[REDRIVES],
            ).get("Messages", [])  # fmt: skip
            fresh = [m for m in received if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                reason = self._why_it_stays(message)
                if reason is None:
                    if self._redrive(message, done):
                        continue
                    reason = "redrive failed (it stays; run reconcile again)"
                done.left.append({"message_id": message["MessageId"], "reason": reason})
                kept.append(message)
        for i in range(0, len(kept), 10):  # visible again at once: it is the operator's to see now
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.dlq_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                         for n, m in enumerate(kept[i : i + 10])],
            )  # fmt: skip
        return done

    @staticmethod
    def _why_it_stays(message: dict[str, Any]) -> str | None:
        try:
            parse_transaction(message["Body"])
        except InvalidMessage as exc:
            return f"invalid: {exc.reason}"
        redrives = int(message.get("MessageAttributes", {}).get(REDRIVES, {}).get("StringValue", "0") or 0)
        if redrives >= 1:
            return "dead-lettered again after a redrive: the ledger refused it (see the processor's log)"
        return None

    def _redrive(self, message: dict[str, Any], done: Redriven) -> bool:
        redrives = int(message.get("MessageAttributes", {}).get(REDRIVES, {}).get("StringValue", "0") or 0)
        try:
            self.target_sqs.send_message(
                QueueUrl=self.target_queue_url, MessageBody=message["Body"],
                MessageAttributes={REDRIVES: {"DataType": "Number", "StringValue": str(redrives + 1)}},
            )  # fmt: skip
            self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
        except AWS_ERRORS as exc:
            done.errors.append(" ".join(str(exc).split())[:300])
            return False
        done.redriven += 1
        return True
