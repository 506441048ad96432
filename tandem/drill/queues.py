"""The drill's side of SQS: sending the steady workload with back-pressure, waiting for queues to drain, and
taking what reached a DLQ (the audit's input). Also the twin's clock, which the steady drill's window reads."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem.drill.audit import Target
from tandem.twin.control import call

MAX_IN_FLIGHT = 50  # producer back-pressure: keep the queue short, as a consumer that keeps up does
PROGRESS_EVERY = 5.0  # real seconds between progress lines while waiting

Progress = Callable[[str], None]


def twin_clock(state_dir: Path) -> float:
    """The twin's emulated time (epoch seconds), the clock its metrics are stamped with."""
    return float(call(state_dir, "GET", "/status")["clock"]["now"])


def window_start(state_dir: Path, scale: float) -> int:
    """The next whole emulated second, once the twin's clock has passed it (CloudWatch counts whole seconds)."""
    now = twin_clock(state_dir)
    time.sleep((math.floor(now) + 1 - now) / scale)
    return math.floor(now) + 1


def produce(target: Target, bodies: list[str], deadline: float) -> None:
    """Send every body in batches of 10, never letting more than MAX_IN_FLIGHT wait in the queue."""
    sqs = target.client("sqs")
    for i in range(0, len(bodies), 10):
        while _queue_depth(sqs, target.queue_url)[0] > MAX_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise TimeoutError("the twin is not consuming the queue (is the event source mapping enabled?)")
            time.sleep(0.02)
        resp = sqs.send_message_batch(
            QueueUrl=target.queue_url,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {resp['Failed']}")


def wait_drained(target: Target, deadline: float, progress: Progress | None = None) -> None:
    """Wait until nothing is waiting or in flight; say how it goes every few seconds (retries can be slow)."""
    sqs, empty_checks, next_note = target.client("sqs"), 0, time.monotonic() + PROGRESS_EVERY
    while time.monotonic() < deadline:
        visible, in_flight = _queue_depth(sqs, target.queue_url)
        empty_checks = empty_checks + 1 if visible + in_flight == 0 else 0
        if empty_checks >= 3:
            return
        if progress is not None and time.monotonic() >= next_note:
            progress(f"waiting for the queue to drain: {visible} waiting, {in_flight} in flight (retries)")
            next_note = time.monotonic() + PROGRESS_EVERY
        time.sleep(0.05)
    raise TimeoutError("the queue was not drained in time")


def _queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def dead_letter_seconds(target: Target, clock_scale: float) -> float:
    """Real seconds a poison message needs to reach the DLQ on this twin: maxReceiveCount visibility timeouts."""
    attrs = target.client("sqs").get_queue_attributes(
        QueueUrl=target.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
    )["Attributes"]
    receives = int(json.loads(attrs.get("RedrivePolicy", "{}")).get("maxReceiveCount", 1))
    return receives * int(attrs["VisibilityTimeout"]) / clock_scale


def take_dlq(target: Target) -> list[str]:
    """Receive and delete everything in the DLQ (what a drill leaves there is its own poison)."""
    sqs = target.client("sqs")
    bodies: list[str] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=target.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            return bodies
        bodies += [m["Body"] for m in msgs]
        sqs.delete_message_batch(
            QueueUrl=target.dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )
