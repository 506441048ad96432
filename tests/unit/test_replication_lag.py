"""Lag and heartbeat arithmetic: units, freshness, which signal wins, and unknown never read as zero."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from replication_monitor.monitor import aurora_reading
from tandem_core.aurora_observer import AuroraObservation
from tandem_core.heartbeat import from_attributes, to_attributes
from tandem_core.replication import (
    AURORA_IN,
    DDB_OUT,
    S3_OUT_LATENCY,
    S3_OUT_PENDING,
    HeartbeatState,
    MetricReading,
    OutboundLag,
    Store,
    StoreReading,
    age,
    carried_lag,
    fetch_metrics,
    heartbeat_state,
    replication_metrics,
    s3_lag,
)

NOW = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
SPECS = replication_metrics(
    table="tandem-ledger", peer_region="us-west-2", bucket="tandem-archive-primary-1",
    peer_bucket="tandem-archive-dr-1", rule_id="to-peer-region", cluster_id="tandem-ledger-primary",
)  # fmt: skip


@pytest.fixture
def cloudwatch(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def put(cw: Any, spec_id: str, value: float, seconds_ago: float) -> None:
    spec = next(s for s in SPECS if s.id == spec_id)
    cw.put_metric_data(
        Namespace=spec.namespace,
        MetricData=[{
            "MetricName": spec.name, "Dimensions": [{"Name": k, "Value": v} for k, v in spec.dimensions],
            "Value": value, "Timestamp": NOW - timedelta(seconds=seconds_ago),
        }],
    )  # fmt: skip


def test_the_metric_queries_name_aws_metrics_with_their_real_dimensions() -> None:
    by_id = {s.id: s for s in SPECS}
    ddb = by_id[DDB_OUT].query()["MetricStat"]
    assert (ddb["Metric"]["Namespace"], ddb["Metric"]["MetricName"]) == ("AWS/DynamoDB", "ReplicationLatency")
    assert ddb["Metric"]["Dimensions"] == [
        {"Name": "TableName", "Value": "tandem-ledger"}, {"Name": "ReceivingRegion", "Value": "us-west-2"},
    ]  # fmt: skip
    s3_dims = {d["Name"] for d in by_id[S3_OUT_PENDING].query()["MetricStat"]["Metric"]["Dimensions"]}
    assert s3_dims == {"SourceBucket", "DestinationBucket", "RuleId"}
    assert by_id[AURORA_IN].query()["MetricStat"]["Metric"]["MetricName"] == "AuroraGlobalDBRPOLag"
    assert all(s.query()["MetricStat"]["Stat"] == "Maximum" for s in SPECS)
    no_cluster = replication_metrics(
        table="t", peer_region="us-west-2", bucket="b", peer_bucket="p", rule_id="r", cluster_id=None
    )
    assert AURORA_IN not in {s.id for s in no_cluster}


def test_one_get_metric_data_reads_the_latest_datapoint_of_each_in_seconds(cloudwatch: Any) -> None:
    put(cloudwatch, DDB_OUT, 850.0, 150)  # milliseconds
    put(cloudwatch, DDB_OUT, 1250.0, 30)
    put(cloudwatch, S3_OUT_LATENCY, 4.0, 60)  # seconds
    put(cloudwatch, S3_OUT_PENDING, 3.0, 60)
    calls: list[str] = []
    cloudwatch.meta.events.register("before-call.cloudwatch", lambda model, **_: calls.append(model.name))
    readings = fetch_metrics(cloudwatch, SPECS, NOW, 300)
    assert calls == ["GetMetricData"]
    assert readings[DDB_OUT].value == pytest.approx(1.25)
    assert readings[DDB_OUT].as_of == pytest.approx((NOW - timedelta(seconds=30)).timestamp(), abs=60)
    assert readings[S3_OUT_LATENCY].value == 4.0
    assert readings[S3_OUT_PENDING].value == 3.0
    assert readings[AURORA_IN] == MetricReading()  # no datapoint: unknown, not 0


def test_a_datapoint_older_than_the_window_does_not_count(cloudwatch: Any) -> None:
    put(cloudwatch, DDB_OUT, 400.0, 900)
    assert not fetch_metrics(cloudwatch, SPECS, NOW, 300)[DDB_OUT].known


@pytest.mark.parametrize(
    ("latency", "pending", "expected"),
    [
        (MetricReading(3.0, 1.0), MetricReading(7.0, 1.0), 3.0),  # the latency is the lag
        (MetricReading(), MetricReading(0.0, 1.0), 0.0),  # nothing pending and nothing replicating: caught up
        (MetricReading(), MetricReading(4.0, 1.0), None),  # a backlog without a latency: unknown
        (MetricReading(), MetricReading(), None),  # no data at all: unknown
    ],
)
def test_s3_lag(latency: MetricReading, pending: MetricReading, expected: float | None) -> None:
    assert s3_lag(latency, pending).value == expected


def test_outbound_lag_survives_the_trip_through_a_dynamodb_item() -> None:
    outbound = OutboundLag.from_metrics({
        DDB_OUT: MetricReading(0.8, 100.0), S3_OUT_LATENCY: MetricReading(), S3_OUT_PENDING: MetricReading(0.0, 90.0),
    })  # fmt: skip
    assert outbound.s3 == MetricReading(0.0, 90.0)
    stored = from_attributes(to_attributes({"outbound": outbound.as_dict()}))
    assert OutboundLag.from_dict(stored["outbound"]) == outbound
    assert OutboundLag.from_dict(None) == OutboundLag()
    assert not OutboundLag().dynamodb.known


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [(None, HeartbeatState.MISSING), (0.0, HeartbeatState.FRESH), (90.0, HeartbeatState.FRESH),
     (90.001, HeartbeatState.STALE)],
)  # fmt: skip
def test_heartbeat_state(age_s: float | None, expected: HeartbeatState) -> None:
    assert heartbeat_state(age_s, 90.0) is expected


def test_age_never_goes_negative_when_the_writer_clock_runs_ahead() -> None:
    assert age(100.0, 100.4) == 0.0
    assert age(100.0, 95.5) == 4.5


def test_a_carried_lag_counts_only_while_its_heartbeat_item_is_fresh() -> None:
    fresh = carried_lag(Store.DYNAMODB, MetricReading(0.7, 50.0), 12.0, 90.0, HeartbeatState.FRESH, 12.0)
    assert (fresh.lag_seconds, fresh.source, fresh.as_of) == (0.7, "peer cloudwatch", 50.0)
    old = carried_lag(Store.DYNAMODB, MetricReading(0.7, 50.0), 200.0, 90.0, HeartbeatState.STALE, 200.0)
    assert old.lag_seconds is None
    assert old.last_known_lag_seconds == 0.7  # kept as the RPO estimate, not reported as the lag
    no_item = carried_lag(Store.S3, MetricReading(), None, 90.0, HeartbeatState.FRESH, 3.0)
    assert (no_item.lag_seconds, no_item.source) == (None, "no peer heartbeat item")
    no_point = carried_lag(Store.S3, MetricReading(), 5.0, 90.0, HeartbeatState.FRESH, 3.0)
    assert (no_point.lag_seconds, no_point.source) == (None, "peer reported no datapoint")
    unreadable = carried_lag(
        Store.DYNAMODB, MetricReading(0.1, 1.0), None, 90.0, HeartbeatState.UNREADABLE, None, carrier_readable=False
    )
    assert unreadable.lag_seconds is None
    assert unreadable.heartbeat is HeartbeatState.UNREADABLE


def test_aurora_on_the_writer_is_zero_lag_and_has_no_heartbeat_to_read() -> None:
    r = aurora_reading(AuroraObservation(True, writer=True, rpo_lag_seconds=0.0, heartbeat_written=True),
                       MetricReading(), 10.0, 90.0)  # fmt: skip
    assert (r.lag_seconds, r.source, r.heartbeat) == (0.0, "writer", HeartbeatState.NOT_APPLICABLE)


def test_aurora_on_a_secondary_prefers_the_status_function_then_the_metric() -> None:
    obs = AuroraObservation(True, writer=False, rpo_lag_seconds=1.5, status_age_seconds=2.0, heartbeat_age_seconds=40.0)
    r = aurora_reading(obs, MetricReading(9.0, 1.0), 100.0, 90.0)
    assert (r.lag_seconds, r.source, r.as_of, r.heartbeat) == (1.5, "aurora_global_db_status", 98.0,
                                                                HeartbeatState.FRESH)  # fmt: skip
    stopped = AuroraObservation(True, writer=False, rpo_lag_seconds=1.5, status_age_seconds=300.0)
    r = aurora_reading(stopped, MetricReading(0.9, 1.0), 100.0, 90.0)
    assert (r.lag_seconds, r.source, r.last_known_lag_seconds) == (0.9, "cloudwatch AuroraGlobalDBRPOLag", 1.5)
    r = aurora_reading(stopped, MetricReading(), 100.0, 90.0)
    assert (r.lag_seconds, r.source, r.heartbeat) == (None, "status calculation too old", HeartbeatState.MISSING)
    no_function = AuroraObservation(True, writer=False, status_error="aurora_global_db_status() is not available")
    assert aurora_reading(no_function, MetricReading(), 100.0, 90.0).source.startswith("aurora_global_db_status()")


def test_an_unreachable_database_leaves_the_metric_as_the_only_aurora_signal() -> None:
    down = AuroraObservation(False, error="OSError: refused")
    r = aurora_reading(down, MetricReading(), 100.0, 90.0)
    assert (r.lag_seconds, r.heartbeat) == (None, HeartbeatState.UNREADABLE)
    assert aurora_reading(down, MetricReading(0.3, 1.0), 100.0, 90.0).lag_seconds == 0.3


@pytest.mark.parametrize(
    ("lag", "hb_age", "every", "expected_lag", "floored"),
    [
        (0.5, 45.0, 20.0, 25.0, True),  # two heartbeats missing: at least age - every behind
        (0.5, 40.0, 20.0, 0.5, False),  # exactly two intervals old: not overdue yet
        (30.0, 45.0, 20.0, 30.0, False),  # the measurement already says more
        (None, 45.0, 20.0, 25.0, True),  # unknown lag: the heartbeat gives a lower bound
        (0.5, 45.0, None, 0.5, False),  # no promise from the writer: nothing to infer
        (0.5, None, 20.0, 0.5, False),  # no heartbeat: nothing to infer
    ],
)
def test_an_overdue_heartbeat_is_a_lower_bound_of_the_lag(
    lag: float | None, hb_age: float | None, every: float | None, expected_lag: float | None, floored: bool
) -> None:
    reading = StoreReading(Store.DYNAMODB, lag, "peer cloudwatch", None, HeartbeatState.FRESH, hb_age)
    bounded = reading.at_least_overdue(every)
    assert bounded.lag_seconds == expected_lag
    assert bounded.source.startswith("heartbeat overdue") is floored
