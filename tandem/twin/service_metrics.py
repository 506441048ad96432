"""The metrics AWS services publish on their own, which moto does not: SQS queue gauges every minute,
Lambda Invocations/Errors per invocation. Alarms in the template watch exactly these.

Timestamps come from the twin clock, so alarm periods evaluate on the same compressed time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from tandem.twin.clock import TwinClock

PERIOD = 60.0  # emulated seconds between SQS samples, as CloudWatch's basic SQS metrics


class ServiceMetrics:
    def __init__(
        self, clock: TwinClock, regions: list[str], cloudwatch: Callable[[str], Any], is_up: Callable[[str], bool]
    ) -> None:
        self._clock = clock
        self._regions = regions
        self._cloudwatch = cloudwatch
        self._is_up = is_up
        self._next_sample = 0.0
        self._lock = threading.Lock()
        self._invocations: list[tuple[str, str, bool, float]] = []

    def record_invocation(self, region: str, function_name: str, ok: bool, now: float) -> None:
        with self._lock:
            self._invocations.append((region, function_name, ok, now))

    def tick(self, now: float) -> None:
        with self._lock:
            pending, self._invocations = self._invocations, []
        for region, function_name, ok, at in pending:
            if self._is_up(region):
                stamp = datetime.fromtimestamp(at, UTC)
                dims = [{"Name": "FunctionName", "Value": function_name}]
                self._cloudwatch(region).put_metric_data(
                    Namespace="AWS/Lambda",
                    MetricData=[
                        {"MetricName": "Invocations", "Dimensions": dims, "Value": 1.0, "Timestamp": stamp},
                        {"MetricName": "Errors", "Dimensions": dims, "Value": 0.0 if ok else 1.0, "Timestamp": stamp},
                    ],
                )
        if now < self._next_sample:
            return
        self._next_sample = now + PERIOD
        for region in self._regions:
            if self._is_up(region):
                self._sample_queues(region, now)

    def _sample_queues(self, region: str, now: float) -> None:
        stamp = datetime.fromtimestamp(now, UTC)
        data = []
        for name, queue in sqs_backends[DEFAULT_ACCOUNT_ID][region].queues.items():
            messages = list(queue._messages)
            sent: list[float] = []
            for message in messages:
                if message.sent_timestamp is not None:
                    sent.append(float(message.sent_timestamp))
            oldest = min(sent) if sent else None
            age = max(0.0, now - self._clock.to_emulated(oldest / 1000)) if oldest else 0.0
            dims = [{"Name": "QueueName", "Value": name}]
            data += [
                {"MetricName": "ApproximateNumberOfMessagesVisible", "Dimensions": dims,
                 "Value": float(len(queue.messages)), "Timestamp": stamp},
                {"MetricName": "ApproximateAgeOfOldestMessage", "Dimensions": dims, "Value": age, "Timestamp": stamp},
            ]  # fmt: skip
        for i in range(0, len(data), 20):
            self._cloudwatch(region).put_metric_data(Namespace="AWS/SQS", MetricData=data[i : i + 20])
