"""Forwarding: what lands in the queue of a region that is not active goes to the active region's queue.

DNS follows ingress health before any failover decision, and a restored old primary still holds what it
had, so a region that is not active may find messages in its queue (DESIGN §4, "nothing stranded"). They
are moved with the same body; the ledger's idempotency makes a message forwarded twice harmless. A message
is deleted here only after the active region's queue accepted it, so a failure half-way loses nothing:
what was not accepted becomes visible again after the short visibility timeout and the next run retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
