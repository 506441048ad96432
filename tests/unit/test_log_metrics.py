"""The twin's EMF extraction: what a function prints becomes CloudWatch datapoints, as CloudWatch Logs does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from replication_monitor.metrics import EmfSink
from tandem.twin.clock import TwinClock
from tandem.twin.log_metrics import EmfExtractor, parse_emf
from tandem_core.replication import Store

REGION = "us-west-2"


def _printed(capsys: pytest.CaptureFixture[str], emit: Any) -> list[str]:
    emit()
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_the_monitors_own_emf_lines_become_its_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    sink, now = EmfSink(REGION), round(time.time(), 2)
    lines = _printed(capsys, lambda: sink.probe_round(now, False, 42.5))
    lines += _printed(capsys, lambda: sink.run(now, {Store.AURORA: 0.5, Store.DYNAMODB: None}, False, True))
    points = [p for line in lines for p in parse_emf(line)]
    by_name = {p.name: p for p in points}
    assert set(by_name) == {"PeerHealthy", "PeerHeartbeatAgeSeconds", "AuroraLagSeconds", "Ready", "FailoverArmed"}
    assert all(p.namespace == "Tandem/Replication" for p in points)
    assert all(p.dimensions == (("Region", REGION),) for p in points)
    assert (by_name["PeerHealthy"].value, by_name["PeerHealthy"].storage_resolution) == (0.0, 1)
    assert by_name["PeerHeartbeatAgeSeconds"].unit == "Seconds"
    assert by_name["PeerHeartbeatAgeSeconds"].timestamp == pytest.approx(now, abs=0.001)
    assert (by_name["AuroraLagSeconds"].value, by_name["AuroraLagSeconds"].storage_resolution) == (0.5, 60)
    assert by_name["Ready"].value == 0.0
    assert by_name["FailoverArmed"].value == 1.0


def _emf(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": 1_800_000_000_000,
            "CloudWatchMetrics": [
                {"Namespace": "Tandem/Replication", "Dimensions": [["Region"]], "Metrics": [{"Name": "Ready"}]}
            ],
        },
        "Region": REGION,
        "Ready": 1,
    }
    return doc | changes


@pytest.mark.parametrize(
    ("line", "count"),
    [
        (json.dumps(_emf()), 1),
        (json.dumps(_emf(Ready=[1, 0, 1])), 3),  # a list is one datapoint per value
        (json.dumps(_emf(Region=7)), 0),  # a dimension value that is not a string drops the set
        (json.dumps(_emf(Ready="1")), 0),  # a value that is not a number is no datapoint
        (json.dumps(_emf(Ready=True)), 0),
        (json.dumps(_emf(_aws={"Timestamp": "now", "CloudWatchMetrics": []})), 0),
        (json.dumps(_emf(_aws={"CloudWatchMetrics": []})), 0),
        ('{"level": "INFO", "message": "no _aws here"}', 0),
        ('{"_aws": ', 0),  # a partial line
        ("START RequestId: 1 Version: $LATEST", 0),
        ("", 0),
    ],
)
def test_only_valid_emf_yields_datapoints(line: str, count: int) -> None:
    assert len(parse_emf(line)) == count


@given(st.text())
def test_any_log_line_parses_without_raising(line: str) -> None:
    assert isinstance(parse_emf(line), list)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
    )
)
def test_any_json_under_aws_parses_without_raising(meta: Any) -> None:
    assert isinstance(parse_emf(json.dumps({"_aws": meta, "Region": REGION, "Ready": 1})), list)


@pytest.fixture
def cloudwatch(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def test_datapoints_reach_the_regions_cloudwatch_on_the_next_tick_in_emulated_time(cloudwatch: Any) -> None:
    clock = TwinClock(scale=10.0)
    up = {REGION: True}
    extractor = EmfExtractor(clock, lambda _region: cloudwatch, lambda region: up[region])
    real = clock._origin_real + 3.0
    extractor.accept(REGION, json.dumps(_emf(_aws={**_emf()["_aws"], "Timestamp": int(real * 1000)})))
    assert cloudwatch.list_metrics()["Metrics"] == []  # nothing before the tick
    extractor.tick(clock.to_emulated(real) + 1)
    points = cloudwatch.get_metric_statistics(
        Namespace="Tandem/Replication", MetricName="Ready", Dimensions=[{"Name": "Region", "Value": REGION}],
        StartTime=datetime.fromtimestamp(clock._origin_real, UTC),
        EndTime=datetime.fromtimestamp(clock.to_emulated(real) + 60, UTC), Period=1, Statistics=["Maximum"],
    )["Datapoints"]  # fmt: skip
    assert [p["Maximum"] for p in points] == [1.0]
    assert points[0]["Timestamp"].timestamp() == pytest.approx(clock.to_emulated(real), abs=1)  # 30 s in, not 3


def test_a_region_in_an_outage_ingests_nothing(cloudwatch: Any) -> None:
    clock = TwinClock()
    extractor = EmfExtractor(clock, lambda _region: cloudwatch, lambda _region: False)
    extractor.accept(REGION, json.dumps(_emf()))
    extractor.tick(clock.now())
    extractor.tick(clock.now())
    assert cloudwatch.list_metrics()["Metrics"] == []
