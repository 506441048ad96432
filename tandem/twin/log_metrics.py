"""What CloudWatch Logs does with the Embedded Metric Format lines a function prints: metrics in its region.

The monitor (and the processor) publish their metrics the Lambda way, as EMF objects on stdout; in AWS the
log group turns each into CloudWatch datapoints. The twin's workers hand every line their function prints to
:meth:`EmfExtractor.accept`; the extractor keeps the datapoints of valid EMF lines and puts them into that
region's CloudWatch on the next tick (so alarms on ``Tandem/Replication`` evaluate as they would in AWS). A
region in an outage ingests nothing, as its log service is gone with it.

EMF timestamps are the function's wall clock (real milliseconds); the twin's metric store holds emulated time,
so each is converted with ``clock.to_emulated``, as the service metrics are. Lines that are not EMF (plain
logs, malformed or partial objects) yield nothing, as in CloudWatch Logs, where they stay log events only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tandem.twin.clock import TwinClock

BATCH = 1000  # datapoints per PutMetricData call (the API's limit)


@dataclass(frozen=True)
class Datapoint:
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    value: float
    unit: str
    storage_resolution: int
    timestamp: float  # real epoch seconds, as the function stamped it

    def datum(self, stamp: datetime) -> dict[str, Any]:
        return {
            "MetricName": self.name,
            "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
            "Value": self.value,
            "Unit": self.unit,
            "StorageResolution": self.storage_resolution,
            "Timestamp": stamp,
        }


def parse_emf(line: str) -> list[Datapoint]:
    """The datapoints of one log line, [] unless it is a valid EMF object (CloudWatch's rules, in short)."""
    text = line.strip()
    if not text.startswith("{") or '"_aws"' not in text:
        return []
    try:
        doc = json.loads(text)
        meta = doc["_aws"]
        timestamp = meta["Timestamp"]
        directives = meta["CloudWatchMetrics"]
    except (ValueError, TypeError, KeyError):
        return []
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not isinstance(directives, list):
        return []
    points: list[Datapoint] = []
    for directive in directives:
        points += _directive(doc, directive, timestamp / 1000)
    return points


def _directive(doc: dict[str, Any], directive: Any, at: float) -> list[Datapoint]:
    if not isinstance(directive, dict) or not isinstance(directive.get("Namespace"), str):
        return []
    dimension_sets = directive.get("Dimensions", [[]])
    metrics = directive.get("Metrics", [])
    if not isinstance(dimension_sets, list) or not isinstance(metrics, list):
        return []
    points: list[Datapoint] = []
    for keys in dimension_sets:
        if not isinstance(keys, list) or not all(isinstance(doc.get(k), str) for k in keys):
            continue  # a dimension whose value is missing or not a string: CloudWatch drops the set
        dims = tuple((k, str(doc[k])) for k in keys)
        for metric in metrics:
            if not isinstance(metric, dict) or not isinstance(metric.get("Name"), str):
                continue
            name = metric["Name"]
            values = doc.get(name)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    points.append(
                        Datapoint(
                            directive["Namespace"], name, dims, float(value), str(metric.get("Unit", "None")),
                            1 if metric.get("StorageResolution") == 1 else 60, at,
                        )
                    )  # fmt: skip
    return points


class EmfExtractor:
    """The log service of every region: EMF lines in (from worker threads), datapoints out (on the tick)."""

    def __init__(self, clock: TwinClock, cloudwatch: Callable[[str], Any], is_up: Callable[[str], bool]) -> None:
        self._clock = clock
        self._cloudwatch = cloudwatch
        self._is_up = is_up
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Datapoint]] = []

    def accept(self, region: str, line: str) -> None:
        points = parse_emf(line)
        if points:
            with self._lock:
                self._pending += [(region, p) for p in points]

    def tick(self, now: float) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        by_region: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for region, point in pending:
            if not self._is_up(region):
                continue
            stamp = datetime.fromtimestamp(min(now, self._clock.to_emulated(point.timestamp)), UTC)
            by_region.setdefault(region, {}).setdefault(point.namespace, []).append(point.datum(stamp))
        for region, namespaces in by_region.items():
            for namespace, data in namespaces.items():
                for i in range(0, len(data), BATCH):
                    self._cloudwatch(region).put_metric_data(Namespace=namespace, MetricData=data[i : i + BATCH])
