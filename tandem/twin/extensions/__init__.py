"""moto extensions for the twin, pinned to moto 5.2.5 (``tandem.moto_ext.MOTO_VERSION``).

Each module adds what moto lacks as methods on moto's own backend/response classes (moto dispatches an API
action to the snake_case method of the same name on the service's Response class), or as a periodic
``tick(now)`` driven by the twin daemon with the compressed clock. An extension never changes what moto
already does correctly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol


class Ticking(Protocol):
    """Periodic work of an extension; ``now`` is the twin clock's emulated epoch seconds."""

    def tick(self, now: float) -> None: ...


#: Emulated seconds between the samples of a metric AWS publishes per minute.
METRIC_PERIOD = 60.0


class MinutePublisher:
    """Calls ``publish(now)`` once per emulated minute (AWS publishes the replication metrics per minute).

    The datapoints are stamped with the wall-clock instant and carry real seconds: their reader is the
    replication monitor, a function whose own clock is the real one (``time.time``) and which asks
    GetMetricData for the last minutes of *that* clock; the twin clock sets only the cadence.
    """

    def __init__(
        self,
        cloudwatch: Callable[[str], Any],
        is_up: Callable[[str], bool],
        real_seconds: Callable[[float], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._cloudwatch, self._is_up = cloudwatch, is_up
        self._real_seconds, self._wall = real_seconds, wall
        self._next = 0.0

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + METRIC_PERIOD
        self.publish(now)

    def publish(self, now: float) -> None:
        raise NotImplementedError

    def _stamp(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    def _send(self, namespace: str, per_region: dict[str, list[dict[str, Any]]]) -> None:
        """PutMetricData in each source region that is up (20 datapoints per call); a region that is down
        publishes nothing, as its service would not."""
        for region, data in per_region.items():
            if self._is_up(region):
                for i in range(0, len(data), 20):
                    self._cloudwatch(region).put_metric_data(Namespace=namespace, MetricData=data[i : i + 20])
