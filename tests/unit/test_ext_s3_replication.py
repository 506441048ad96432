"""S3 replication on moto (tandem.twin.extensions.s3_replication)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.extensions import s3_replication
from tandem.twin.extensions.s3_replication import S3Replicator
from tests.conftest import FakeClock

EAST, WEST = "us-east-1", "us-west-2"
A, B = "tandem-archive-us-east-1", "tandem-archive-us-west-2"
ROLE = "arn:aws:iam::123456789012:role/replication"


@dataclass
class World:
    clock: FakeClock
    replicator: S3Replicator
    s3: dict[str, Any]

    def tick(self, at: float) -> None:
        self.clock.t = at
        self.replicator.tick(at)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.s3[EAST].head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                return False
            raise
        return True


def replicate(client: Any, source: str, destination: str, **filt: Any) -> None:
    rule: dict[str, Any] = {
        "ID": f"to-{destination}",
        "Priority": 1,
        "Status": "Enabled",
        "Filter": filt or {"Prefix": ""},
        "DeleteMarkerReplication": {"Status": "Disabled"},
        "Destination": {"Bucket": f"arn:aws:s3:::{destination}"},
    }
    client.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [rule]})


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    clock = FakeClock()
    replicator = S3Replicator(delay_seconds=5.0, clock=clock)
    s3_replication.install(replicator)
    try:
        with mock_aws():
            s3 = {region: boto3.client("s3", region_name=region) for region in (EAST, WEST)}
            s3[EAST].create_bucket(Bucket=A)
            s3[WEST].create_bucket(Bucket=B, CreateBucketConfiguration={"LocationConstraint": WEST})
            for bucket in (A, B):
                s3[EAST].put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            yield World(clock, replicator, s3)
    finally:
        s3_replication.set_active(None)


def test_object_is_copied_after_the_delay_with_body_metadata_and_status(world: World) -> None:
    replicate(world.s3[EAST], A, B)
    put = world.s3[EAST].put_object(
        Bucket=A, Key="2024/01/batch.json", Body=b'{"n": 1}', ContentType="application/json",
        Metadata={"batch": "7"}, Tagging="kind=batch",
    )  # fmt: skip
    assert world.s3[EAST].head_object(Bucket=A, Key="2024/01/batch.json")["ReplicationStatus"] == "PENDING"
    assert world.replicator.pending(A) == 1
    world.tick(1004.9)
    assert not world.exists(B, "2024/01/batch.json")
    assert world.replicator.lag(A) == pytest.approx(4.9)

    world.tick(1005.0)
    replica = world.s3[WEST].get_object(Bucket=B, Key="2024/01/batch.json")
    assert replica["Body"].read() == b'{"n": 1}'
    assert replica["ContentType"] == "application/json"
    assert replica["Metadata"] == {"batch": "7"}
    assert replica["ReplicationStatus"] == "REPLICA"
    assert replica["VersionId"] == put["VersionId"]
    tags = world.s3[WEST].get_object_tagging(Bucket=B, Key="2024/01/batch.json")["TagSet"]
    assert tags == [{"Key": "kind", "Value": "batch"}]
    assert world.s3[EAST].head_object(Bucket=A, Key="2024/01/batch.json")["ReplicationStatus"] == "COMPLETED"
    assert world.replicator.pending() == 0
    assert world.replicator.lags() == {A: 0.0}


def test_prefix_filter_excludes_other_keys(world: World) -> None:
    replicate(world.s3[EAST], A, B, Prefix="ledger/")
    world.s3[EAST].put_object(Bucket=A, Key="ledger/1", Body=b"1")
    world.s3[EAST].put_object(Bucket=A, Key="tmp/1", Body=b"2")
    assert "ReplicationStatus" not in world.s3[EAST].head_object(Bucket=A, Key="tmp/1")
    world.tick(1010)
    assert world.exists(B, "ledger/1")
    assert not world.exists(B, "tmp/1")


def test_and_filter_with_tags_is_checked_when_copying(world: World) -> None:
    replicate(world.s3[EAST], A, B, And={"Prefix": "x/", "Tags": [{"Key": "replicate", "Value": "yes"}]})
    world.s3[EAST].put_object(Bucket=A, Key="x/tagged", Body=b"1", Tagging="replicate=yes")
    world.s3[EAST].put_object(Bucket=A, Key="x/untagged", Body=b"2")
    world.tick(1010)
    assert world.exists(B, "x/tagged")
    assert not world.exists(B, "x/untagged")
    assert "ReplicationStatus" not in world.s3[EAST].head_object(Bucket=A, Key="x/untagged")


def test_no_replication_configuration_copies_nothing(world: World) -> None:
    world.s3[EAST].put_object(Bucket=A, Key="k", Body=b"1")
    assert world.replicator.pending() == 0
    world.tick(1100)
    assert not world.exists(B, "k")
    assert "ReplicationStatus" not in world.s3[EAST].head_object(Bucket=A, Key="k")


def test_disabled_rule_copies_nothing(world: World) -> None:
    world.s3[EAST].put_bucket_replication(
        Bucket=A,
        ReplicationConfiguration={
            "Role": ROLE,
            "Rules": [{"Status": "Disabled", "Prefix": "", "Destination": {"Bucket": f"arn:aws:s3:::{B}"}}],
        },
    )
    world.s3[EAST].put_object(Bucket=A, Key="k", Body=b"1")
    world.tick(1100)
    assert not world.exists(B, "k")


def test_a_replica_is_not_copied_back_in_a_two_way_setup(world: World) -> None:
    replicate(world.s3[EAST], A, B)
    replicate(world.s3[WEST], B, A)
    world.s3[EAST].put_object(Bucket=A, Key="k", Body=b"from-a")
    world.tick(1010)
    assert world.s3[WEST].head_object(Bucket=B, Key="k")["ReplicationStatus"] == "REPLICA"
    assert world.replicator.pending() == 0
    world.tick(1100)
    versions = world.s3[EAST].list_object_versions(Bucket=A, Prefix="k")["Versions"]
    assert len(versions) == 1  # nothing came back to A

    world.s3[WEST].put_object(Bucket=B, Key="w", Body=b"from-b")  # the other direction works
    world.tick(1200)
    assert world.s3[EAST].get_object(Bucket=A, Key="w")["Body"].read() == b"from-b"


def test_missing_destination_marks_the_source_failed(world: World) -> None:
    replicate(world.s3[EAST], A, "no-such-bucket")
    world.s3[EAST].put_object(Bucket=A, Key="k", Body=b"1")
    world.tick(1010)
    assert world.s3[EAST].head_object(Bucket=A, Key="k")["ReplicationStatus"] == "FAILED"


def test_paused_replication_holds_then_catches_up(world: World) -> None:
    replicate(world.s3[EAST], A, B)
    world.replicator.pause()
    world.s3[EAST].put_object(Bucket=A, Key="k", Body=b"1")
    world.tick(1030)
    assert not world.exists(B, "k")
    assert world.replicator.lags() == {A: pytest.approx(30.0)}
    world.replicator.resume()
    world.tick(1030)
    assert world.exists(B, "k")


def test_replication_needs_a_versioned_source_bucket(world: World) -> None:
    world.s3[EAST].create_bucket(Bucket="unversioned-bucket")
    with pytest.raises(ClientError) as exc:
        replicate(world.s3[EAST], "unversioned-bucket", B)
    assert exc.value.response["Error"]["Code"] == "InvalidRequest"


def test_the_configuration_reads_back_as_it_was_put(world: World) -> None:
    """moto alone answers every rule with Filter.Prefix "" whatever was put; readers must see the real rule."""
    replicate(world.s3[EAST], A, B, Prefix="archive/")
    rules = world.s3[EAST].get_bucket_replication(Bucket=A)["ReplicationConfiguration"]["Rules"]
    assert [(r["ID"], r["Priority"], r["Filter"]) for r in rules] == [(f"to-{B}", 1, {"Prefix": "archive/"})]


WALL = 1_700_000_000.0


def _rule_metrics(cw: Any) -> dict[str, list[float]]:
    dims = [
        {"Name": "SourceBucket", "Value": A}, {"Name": "DestinationBucket", "Value": B},
        {"Name": "RuleId", "Value": f"to-{B}"},
    ]  # fmt: skip
    out = {}
    for name in ("ReplicationLatency", "OperationsPendingReplication"):
        stats = cw.get_metric_statistics(
            Namespace="AWS/S3", MetricName=name, Dimensions=dims, StartTime=WALL - 600, EndTime=WALL + 600,
            Period=60, Statistics=["Maximum"],
        )  # fmt: skip
        out[name] = [p["Maximum"] for p in stats["Datapoints"]]
    return out


def test_rule_metrics_publisher_reports_latency_and_backlog_per_rule_in_the_source_region(world: World) -> None:
    cw = {r: boto3.client("cloudwatch", region_name=r) for r in (EAST, WEST)}
    wall = [WALL]
    up = {EAST: True, WEST: True}
    publisher = s3_replication.RuleMetricsPublisher(
        world.replicator, lambda r: cw[r], up.__getitem__, real_seconds=lambda s: s / 10, wall=lambda: wall[0]
    )
    replicate(world.s3[EAST], A, B)
    world.s3[EAST].put_object(Bucket=A, Key="k1", Body=b"1")
    world.tick(1006)  # copied 6 emulated s after the put
    publisher.tick(1006)
    assert _rule_metrics(cw[EAST]) == {"ReplicationLatency": [0.6], "OperationsPendingReplication": [0.0]}
    assert cw[WEST].list_metrics(Namespace="AWS/S3", MetricName="OperationsPendingReplication")["Metrics"] == []

    world.replicator.pause()  # a stalled rule: the latency is how far behind it is, and keeps rising
    world.s3[EAST].put_object(Bucket=A, Key="k2", Body=b"2")
    world.tick(1106)
    wall[0] += 120
    publisher.tick(1106)
    metrics = _rule_metrics(cw[EAST])
    assert sorted(metrics["ReplicationLatency"]) == [0.6, 10.0]
    assert sorted(metrics["OperationsPendingReplication"]) == [0.0, 1.0]


def test_rule_metrics_publisher_is_silent_for_a_region_that_is_down(world: World) -> None:
    cw = {r: boto3.client("cloudwatch", region_name=r) for r in (EAST, WEST)}
    publisher = s3_replication.RuleMetricsPublisher(
        world.replicator, lambda r: cw[r], lambda r: r != EAST, real_seconds=lambda s: s, wall=lambda: WALL
    )
    replicate(world.s3[EAST], A, B)
    world.s3[EAST].put_object(Bucket=A, Key="k1", Body=b"1")
    publisher.tick(1001)
    assert _rule_metrics(cw[EAST]) == {"ReplicationLatency": [], "OperationsPendingReplication": []}


def test_a_held_region_keeps_its_objects_until_released_then_they_arrive_at_the_pace(world: World) -> None:
    replicate(world.s3[EAST], A, B)
    world.replicator.holds.hold(WEST)  # the destination's region is cut off: nothing reaches it
    for i in range(3):
        world.s3[EAST].put_object(Bucket=A, Key=f"k{i}", Body=b"1")
    world.tick(1100)
    assert not any(world.exists(B, f"k{i}") for i in range(3))
    assert world.replicator.pending(A) == 3
    world.replicator.holds.release(WEST, now=1100, pace=1.0)
    world.tick(1101)
    assert [world.exists(B, f"k{i}") for i in range(3)] == [True, False, False]  # oldest first
    world.tick(1103)
    assert world.replicator.pending() == 0
    assert world.replicator.holds.quiet
