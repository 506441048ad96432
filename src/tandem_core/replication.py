"""Replication lag per store, from the best signal AWS gives, in seconds - and never a made-up zero.

Where AWS publishes each signal decides who can read it:

- Aurora: ``aurora_global_db_status()`` runs on any instance of the global database, so each region reads
  the lag *into* its own cluster locally (``rpo_lag_in_msec`` of its own row; -1 means "this is the writer").
  ``AuroraGlobalDBRPOLag`` (AWS/RDS, the secondary cluster's own region) is the fallback.
- DynamoDB ``ReplicationLatency`` and S3 ``ReplicationLatency`` / ``OperationsPendingReplication`` are
  published in the *source* region (dimension ``ReceivingRegion``; ``SourceBucket``/``DestinationBucket``/
  ``RuleId``). So each region's monitor reads its **outbound** lag from its own CloudWatch (one
  GetMetricData) and carries it to the peer inside its DynamoDB heartbeat item; the peer reads it from its
  own replica. No call ever crosses into the other region, and a measurement arrives only as fresh as the
  heartbeat that carries it.

A store whose lag cannot be measured is *unknown* (``None``), which the readiness verdict treats as such.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any


class Store(enum.StrEnum):
    AURORA = "aurora"
    DYNAMODB = "dynamodb"
    S3 = "s3"


STORES: tuple[Store, ...] = tuple(Store)

#: CloudWatch statistics period (seconds) of every replication metric we read: AWS publishes them per minute.
#: The monitor reads the latest period's Maximum, so a stall that ended stops showing one period later.
METRIC_PERIOD = 60


@dataclass(frozen=True)
class MetricReading:
    """The latest datapoint of a metric in the look-back window (seconds); ``value`` None = no datapoint."""

    value: float | None = None
    as_of: float | None = None  # epoch seconds of the datapoint

    @property
    def known(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "as_of": self.as_of}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MetricReading:
        if not data:
            return cls()
        value, as_of = data.get("value"), data.get("as_of")
        return cls(None if value is None else float(value), None if as_of is None else float(as_of))


@dataclass(frozen=True)
class MetricSpec:
    """One CloudWatch metric to read: ``scale`` turns its unit into seconds (or leaves a count alone)."""

    id: str
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    scale: float = 1.0

    def query(self, period: int = METRIC_PERIOD) -> dict[str, Any]:
        return {
            "Id": self.id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
                },
                "Period": period,
                "Stat": "Maximum",
            },
            "ReturnData": True,
        }


# Query ids (GetMetricData wants them lower-case first).
DDB_OUT = "ddbout"
S3_OUT_LATENCY = "s3outlatency"
S3_OUT_PENDING = "s3outpending"
AURORA_IN = "aurorain"


def replication_metrics(
    *,
    table: str,
    peer_region: str,
    bucket: str,
    peer_bucket: str,
    rule_id: str,
    cluster_id: str | None,
) -> list[MetricSpec]:
    """Every replication metric this region's CloudWatch holds: outbound DynamoDB/S3, inbound Aurora."""
    s3_dims = (("SourceBucket", bucket), ("DestinationBucket", peer_bucket), ("RuleId", rule_id))
    specs = [
        MetricSpec(
            DDB_OUT, "AWS/DynamoDB", "ReplicationLatency", (("TableName", table), ("ReceivingRegion", peer_region)),
            scale=0.001,  # milliseconds
        ),
        MetricSpec(S3_OUT_LATENCY, "AWS/S3", "ReplicationLatency", s3_dims),  # seconds
        MetricSpec(S3_OUT_PENDING, "AWS/S3", "OperationsPendingReplication", s3_dims),  # a count
    ]  # fmt: skip
    if cluster_id:
        specs.append(
            MetricSpec(AURORA_IN, "AWS/RDS", "AuroraGlobalDBRPOLag", (("DBClusterIdentifier", cluster_id),), 0.001)
        )
    return specs


def fetch_metrics(
    cloudwatch: Any, specs: Sequence[MetricSpec], now: datetime, window_seconds: int, period: int = METRIC_PERIOD
) -> dict[str, MetricReading]:
    """The latest datapoint of every metric in ``specs`` within the window: ONE GetMetricData call.

    A metric without a datapoint in the window reads as unknown. Errors propagate (the caller reports the
    metrics dependency as unreachable).
    """
    response = cloudwatch.get_metric_data(
        MetricDataQueries=[s.query(period) for s in specs],
        StartTime=now - timedelta(seconds=window_seconds),
        EndTime=now,
        ScanBy="TimestampDescending",
    )
    results = {r["Id"]: r for r in response.get("MetricDataResults", [])}
    readings: dict[str, MetricReading] = {}
    for spec in specs:
        result = results.get(spec.id, {})
        points = sorted(zip(result.get("Timestamps", []), result.get("Values", []), strict=False), reverse=True)
        if points:
            at, value = points[0]
            readings[spec.id] = MetricReading(float(value) * spec.scale, at.timestamp())
        else:
            readings[spec.id] = MetricReading()
    return readings


def s3_lag(latency: MetricReading, pending: MetricReading) -> MetricReading:
    """S3's lag is its ReplicationLatency; with no latency datapoint, a measured zero backlog means caught up."""
    if latency.known:
        return latency
    if pending.known and pending.value == 0:
        return MetricReading(0.0, pending.as_of)
    return MetricReading()


@dataclass(frozen=True)
class OutboundLag:
    """What this region measured for replication *towards* the peer; the peer reads it from our heartbeat."""

    dynamodb: MetricReading = MetricReading()
    s3: MetricReading = MetricReading()
    s3_pending_operations: float | None = None

    @classmethod
    def from_metrics(cls, readings: Mapping[str, MetricReading]) -> OutboundLag:
        pending = readings.get(S3_OUT_PENDING, MetricReading())
        return cls(
            dynamodb=readings.get(DDB_OUT, MetricReading()),
            s3=s3_lag(readings.get(S3_OUT_LATENCY, MetricReading()), pending),
            s3_pending_operations=pending.value,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "dynamodb": self.dynamodb.as_dict(),
            "s3": self.s3.as_dict(),
            "s3_pending_operations": self.s3_pending_operations,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> OutboundLag:
        data = data or {}
        pending = data.get("s3_pending_operations")
        return cls(
            dynamodb=MetricReading.from_dict(data.get("dynamodb")),
            s3=MetricReading.from_dict(data.get("s3")),
            s3_pending_operations=None if pending is None else float(pending),
        )


class HeartbeatState(enum.StrEnum):
    FRESH = "fresh"
    STALE = "stale"  # seen, but older than the staleness threshold
    MISSING = "missing"  # never seen (not written yet, or the peer's monitor never ran)
    UNREADABLE = "unreadable"  # our own store did not answer: the dependency reason says so
    NOT_APPLICABLE = "not_applicable"  # e.g. Aurora in the writer region: nothing replicates into it


def heartbeat_state(age_seconds: float | None, stale_after: float) -> HeartbeatState:
    if age_seconds is None:
        return HeartbeatState.MISSING
    return HeartbeatState.STALE if age_seconds > stale_after else HeartbeatState.FRESH


def age(now: float, written_at: float) -> float:
    """Seconds since ``written_at``; a writer clock slightly ahead of ours reads as 0, not negative."""
    return max(0.0, now - written_at)


@dataclass(frozen=True)
class StoreReading:
    """The lag into this region's copy of one store, and the end-to-end heartbeat that cross-checks it."""

    store: Store
    lag_seconds: float | None
    source: str  # where the lag came from, or why it is unknown
    as_of: float | None = None  # epoch seconds the lag was measured at
    heartbeat: HeartbeatState = HeartbeatState.MISSING
    heartbeat_age_seconds: float | None = None
    last_known_lag_seconds: float | None = None  # a measurement too old to count (an RPO estimate, not a lag)
    # The last lag measured for this store, in this run or carried from an earlier one (when it was measured):
    # what a failover would lose should the peer fall silent before the next measurement.
    last_measured_lag_seconds: float | None = None
    last_measured_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lag_seconds": _round(self.lag_seconds),
            "source": self.source,
            "as_of": _round(self.as_of),
            "heartbeat": self.heartbeat.value,
            "heartbeat_age_seconds": _round(self.heartbeat_age_seconds),
            "last_known_lag_seconds": _round(self.last_known_lag_seconds),
            "last_measured_lag_seconds": _round(self.last_measured_lag_seconds),
            "last_measured_at": _round(self.last_measured_at),
        }

    def remembering(self, previous: Any, now: float) -> StoreReading:
        """This reading with its last measured lag: this run's, else the one ``previous`` (the store's part of
        our last readiness record) carried. A record without one, or with a malformed one, carries nothing."""
        if self.lag_seconds is not None:
            return replace(self, last_measured_lag_seconds=self.lag_seconds, last_measured_at=self.as_of or now)
        if not isinstance(previous, Mapping):
            return self
        lag, at = previous.get("last_measured_lag_seconds"), previous.get("last_measured_at")
        if not isinstance(lag, int | float) or not isinstance(at, int | float) or isinstance(lag, bool):
            return self
        return replace(self, last_measured_lag_seconds=float(lag), last_measured_at=float(at))

    def at_least_overdue(self, every_seconds: float | None) -> StoreReading:
        """This reading, with the lag raised to what an overdue heartbeat proves.

        The peer writes its heartbeat every ``every_seconds``; once two in a row are missing here (the one we
        see is older than twice that), the writes after it have not arrived, so replication into this region
        is at least ``age - every_seconds`` behind - even when AWS's lag metric has simply stopped. Valid only
        while the peer is alive (answers its probe): a peer that stopped writing makes every heartbeat overdue
        without any replication delay.
        """
        hb_age = self.heartbeat_age_seconds
        if every_seconds is None or hb_age is None or hb_age <= 2 * every_seconds:
            return self
        floor = hb_age - every_seconds
        if self.lag_seconds is not None and self.lag_seconds >= floor:
            return self
        why = f"heartbeat overdue: {hb_age:.1f} s old, written every {every_seconds:g} s (lower bound)"
        return replace(self, lag_seconds=floor, source=why)


def carried_lag(
    store: Store,
    reading: MetricReading,
    carrier_age: float | None,
    stale_after: float,
    heartbeat: HeartbeatState,
    heartbeat_age: float | None,
    *,
    carrier_readable: bool = True,
) -> StoreReading:
    """A lag the peer measured (its outbound metric) and sent in its heartbeat item.

    It counts only while that item is fresh: an old item carries an old measurement, kept as
    ``last_known_lag_seconds`` (the RPO estimate should the peer be gone) but not reported as the lag.
    """
    if not carrier_readable:
        return StoreReading(store, None, "heartbeat item unreadable", None, heartbeat, heartbeat_age)
    if carrier_age is None:
        return StoreReading(store, None, "no peer heartbeat item", None, heartbeat, heartbeat_age)
    if not reading.known:
        return StoreReading(store, None, "peer reported no datapoint", None, heartbeat, heartbeat_age)
    if carrier_age > stale_after:
        return StoreReading(
            store, None, "peer measurement too old", reading.as_of, heartbeat, heartbeat_age,
            last_known_lag_seconds=reading.value,
        )  # fmt: skip
    return StoreReading(store, reading.value, "peer cloudwatch", reading.as_of, heartbeat, heartbeat_age)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
