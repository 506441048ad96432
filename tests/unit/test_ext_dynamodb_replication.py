"""DynamoDB global-table replication on moto (tandem.twin.extensions.dynamodb_replication)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.extensions import dynamodb_replication
from tandem.twin.extensions.dynamodb_replication import DynamoReplicator
from tests.conftest import FakeClock

EAST, WEST = "us-east-1", "us-west-2"
TABLE = "tandem-ledger"
KEYS: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
}


@dataclass
class World:
    clock: FakeClock
    replicator: DynamoReplicator
    ddb: dict[str, Any]

    def tick(self, at: float) -> None:
        self.clock.t = at
        self.replicator.tick(at)

    def get(self, region: str, pk: str, sk: str = "0") -> dict[str, Any] | None:
        item = self.ddb[region].get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")
        return dict(item) if item is not None else None

    def put(self, region: str, pk: str, value: str, sk: str = "0") -> None:
        item = {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"S": value}}
        self.ddb[region].put_item(TableName=TABLE, Item=item)


@pytest.fixture
def world(aws_env: None) -> Iterator[World]:
    clock = FakeClock()
    replicator = DynamoReplicator(lag_seconds=0.5, clock=clock)
    dynamodb_replication.install(replicator)
    try:
        with mock_aws():
            ddb = {region: boto3.client("dynamodb", region_name=region) for region in (EAST, WEST)}
            ddb[EAST].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **KEYS)
            ddb[EAST].update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
            yield World(clock, replicator, ddb)
    finally:
        dynamodb_replication.set_active(None)


def test_replica_table_exists_in_the_other_region(world: World) -> None:
    west = world.ddb[WEST].describe_table(TableName=TABLE)["Table"]
    assert west["KeySchema"] == KEYS["KeySchema"]
    assert west["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert west["GlobalTableVersion"] == "2019.11.21"
    assert [r["RegionName"] for r in west["Replicas"]] == [EAST]
    east = world.ddb[EAST].describe_table(TableName=TABLE)["Table"]
    assert [(r["RegionName"], r["ReplicaStatus"]) for r in east["Replicas"]] == [(WEST, "ACTIVE")]


def test_write_appears_in_the_other_region_only_after_the_lag(world: World) -> None:
    world.put(EAST, "a", "1")
    assert world.replicator.pending() == 1
    world.tick(1000.4)
    assert world.get(WEST, "a") is None
    assert world.replicator.lag(TABLE) == pytest.approx(0.4)
    world.tick(1000.5)
    assert world.get(WEST, "a") == {"pk": {"S": "a"}, "sk": {"S": "0"}, "v": {"S": "1"}}
    assert world.replicator.pending() == 0
    assert world.replicator.lags() == {TABLE: 0.0}


def test_deletes_and_updates_replicate(world: World) -> None:
    world.put(EAST, "a", "1")
    world.put(EAST, "b", "1")
    world.tick(1001)
    world.ddb[EAST].delete_item(TableName=TABLE, Key={"pk": {"S": "a"}, "sk": {"S": "0"}})
    world.ddb[EAST].update_item(
        TableName=TABLE,
        Key={"pk": {"S": "b"}, "sk": {"S": "0"}},
        UpdateExpression="SET v = :v, n = :n",
        ExpressionAttributeValues={":v": {"S": "2"}, ":n": {"N": "7"}},
    )
    world.ddb[EAST].update_item(  # an update that creates the item
        TableName=TABLE,
        Key={"pk": {"S": "c"}, "sk": {"S": "0"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"S": "new"}},
    )
    assert world.replicator.pending() == 3  # one change per write, the final image of each update
    world.tick(1002)
    assert world.get(WEST, "a") is None
    assert world.get(WEST, "b") == {"pk": {"S": "b"}, "sk": {"S": "0"}, "v": {"S": "2"}, "n": {"N": "7"}}
    assert world.get(WEST, "c") == {"pk": {"S": "c"}, "sk": {"S": "0"}, "v": {"S": "new"}}


def test_batch_and_transaction_writes_replicate_but_a_cancelled_transaction_does_not(world: World) -> None:
    world.ddb[EAST].batch_write_item(
        RequestItems={TABLE: [{"PutRequest": {"Item": {"pk": {"S": f"b{i}"}, "sk": {"S": "0"}}}} for i in range(3)]}
    )
    world.ddb[EAST].transact_write_items(
        TransactItems=[{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "t1"}, "sk": {"S": "0"}}}}]
    )
    with pytest.raises(ClientError):
        world.ddb[EAST].transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "t2"}, "sk": {"S": "0"}}}},
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": {"pk": {"S": "t1"}, "sk": {"S": "1"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    world.tick(1001)
    assert world.ddb[WEST].scan(TableName=TABLE)["Count"] == 4
    assert world.get(WEST, "t1") is not None
    assert world.get(EAST, "t2") is None
    assert world.get(WEST, "t2") is None


def test_paused_replication_holds_then_catches_up(world: World) -> None:
    world.replicator.pause()
    world.put(EAST, "a", "1")
    world.put(EAST, "b", "1")
    world.tick(1010)
    assert world.get(WEST, "a") is None
    assert world.replicator.pending(TABLE) == 2
    assert world.replicator.lags() == {TABLE: pytest.approx(10.0)}
    world.replicator.resume()
    world.tick(1010.1)
    assert world.get(WEST, "a") is not None
    assert world.get(WEST, "b") is not None
    assert world.replicator.pending() == 0


def test_replicated_writes_do_not_ping_pong(world: World) -> None:
    world.put(EAST, "a", "1")
    world.tick(1001)
    assert world.replicator.pending() == 0  # applying it in us-west-2 recorded nothing
    world.put(WEST, "a", "2")
    assert world.replicator.pending() == 1
    world.tick(1002)
    assert world.get(EAST, "a") == world.get(WEST, "a") == {"pk": {"S": "a"}, "sk": {"S": "0"}, "v": {"S": "2"}}
    world.tick(1003)
    assert world.replicator.pending() == 0


@pytest.mark.parametrize("first", [EAST, WEST])
def test_last_writer_wins_when_both_regions_write_the_same_key(world: World, first: str) -> None:
    second = WEST if first == EAST else EAST
    world.put(first, "k", "older")
    world.clock.t = 1000.2
    world.put(second, "k", "newer")
    world.tick(1001)
    assert world.get(EAST, "k") == world.get(WEST, "k") == {"pk": {"S": "k"}, "sk": {"S": "0"}, "v": {"S": "newer"}}


def test_a_newer_delete_beats_an_older_put(world: World) -> None:
    world.put(EAST, "k", "v")
    world.tick(1001)
    world.put(EAST, "k", "stale")  # still in flight when us-west-2 deletes the item
    world.clock.t = 1001.1
    world.ddb[WEST].delete_item(TableName=TABLE, Key={"pk": {"S": "k"}, "sk": {"S": "0"}})
    world.tick(1002)
    assert world.get(EAST, "k") is None
    assert world.get(WEST, "k") is None


def test_binary_and_nested_values_survive(world: World) -> None:
    item = {
        "pk": {"S": "b"},
        "sk": {"S": "0"},
        "blob": {"B": b"\x00\xffdata"},
        "doc": {"M": {"list": {"L": [{"N": "1"}, {"S": "x"}]}}},
    }
    world.ddb[EAST].put_item(TableName=TABLE, Item=item)
    world.tick(1001)
    assert world.get(WEST, "b") == item


def test_existing_items_are_copied_to_a_new_replica_and_an_empty_twin_table_is_adopted(aws_env: None) -> None:
    replicator = DynamoReplicator(lag_seconds=0.5, clock=FakeClock())
    dynamodb_replication.install(replicator)
    try:
        with mock_aws():
            ddb = {region: boto3.client("dynamodb", region_name=region) for region in (EAST, WEST)}
            for region in (EAST, WEST):  # as the twin provisions: the same table in each region
                ddb[region].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **KEYS)
            ddb[EAST].put_item(TableName=TABLE, Item={"pk": {"S": "early"}, "sk": {"S": "0"}})
            assert replicator.pending() == 0  # not a global table yet: nothing to replicate
            ddb[EAST].update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
            assert ddb[WEST].get_item(TableName=TABLE, Key={"pk": {"S": "early"}, "sk": {"S": "0"}})["Item"]
            assert replicator.pending() == 0

            with pytest.raises(ClientError) as exc:  # already a replica
                ddb[EAST].update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
            assert exc.value.response["Error"]["Code"] == "ValidationException"

            ddb[EAST].update_table(TableName=TABLE, ReplicaUpdates=[{"Delete": {"RegionName": WEST}}])
            assert TABLE not in ddb[WEST].list_tables()["TableNames"]
            assert "Replicas" not in ddb[EAST].describe_table(TableName=TABLE)["Table"]
            ddb[EAST].put_item(TableName=TABLE, Item={"pk": {"S": "late"}, "sk": {"S": "0"}})
            assert replicator.pending() == 0

            ddb[WEST].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **KEYS)
            ddb[WEST].put_item(TableName=TABLE, Item={"pk": {"S": "local"}, "sk": {"S": "0"}})
            with pytest.raises(ClientError) as exc:  # a non-empty table cannot become a replica
                ddb[EAST].update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
            assert exc.value.response["Error"]["Code"] == "ValidationException"
    finally:
        dynamodb_replication.set_active(None)


def test_no_active_replicator_captures_nothing(world: World) -> None:
    dynamodb_replication.set_active(None)
    world.put(EAST, "a", "1")
    world.tick(1001)
    assert world.get(WEST, "a") is None
    assert world.replicator.pending() == 0


def _latencies(cw: Any, region: str) -> list[tuple[float, list[dict[str, str]]]]:
    metrics = cw.list_metrics(Namespace="AWS/DynamoDB", MetricName="ReplicationLatency")["Metrics"]
    out = []
    for metric in metrics:
        stats = cw.get_metric_statistics(
            Namespace="AWS/DynamoDB", MetricName="ReplicationLatency", Dimensions=metric["Dimensions"],
            StartTime=WALL - 600, EndTime=WALL + 600, Period=60, Statistics=["Maximum"],
        )  # fmt: skip
        out += [(p["Maximum"], metric["Dimensions"]) for p in stats["Datapoints"]]
    return out


WALL = 1_700_000_000.0


def test_latency_publisher_reports_the_observed_lag_in_the_source_region_once_a_minute(world: World) -> None:
    cw = {r: boto3.client("cloudwatch", region_name=r) for r in (EAST, WEST)}
    up = {EAST: True, WEST: True}
    publisher = dynamodb_replication.LatencyPublisher(
        world.replicator, lambda r: cw[r], up.__getitem__, real_seconds=lambda s: s / 10, wall=lambda: WALL
    )
    world.put(EAST, "a", "1")
    world.tick(1002)  # applied 2 emulated s after the write: 0.2 real s at x10
    publisher.tick(1002)
    assert _latencies(cw[EAST], EAST) == [
        (200.0, [{"Name": "TableName", "Value": TABLE}, {"Name": "ReceivingRegion", "Value": WEST}])
    ]
    assert _latencies(cw[WEST], WEST) == []  # published where the change came from
    world.put(EAST, "b", "1")
    world.tick(1003)
    publisher.tick(1030)  # within the minute: nothing new
    assert len(_latencies(cw[EAST], EAST)) == 1


def test_latency_publisher_publishes_nothing_while_stalled_or_for_a_region_that_is_down(world: World) -> None:
    cw = {r: boto3.client("cloudwatch", region_name=r) for r in (EAST, WEST)}
    up = {EAST: True, WEST: True}
    publisher = dynamodb_replication.LatencyPublisher(
        world.replicator, lambda r: cw[r], up.__getitem__, real_seconds=lambda s: s, wall=lambda: WALL
    )
    world.replicator.pause()
    world.put(EAST, "a", "1")
    world.tick(1010)
    publisher.tick(1010)
    assert _latencies(cw[EAST], EAST) == []  # nothing replicated: no datapoint, as AWS
    up[EAST] = False
    world.replicator.resume()
    world.tick(1070)
    publisher.tick(1070)
    assert _latencies(cw[EAST], EAST) == []


def test_a_held_region_replicates_nothing_either_way_and_its_backlog_drains_at_the_pace_once_released(
    world: World,
) -> None:
    """An outage or a partition: what the region wrote stays behind, and so does what is written for it;
    once released, the backlog arrives at the pace (changes per emulated second), not at once."""
    world.replicator.holds.hold(EAST)
    for i in range(6):
        world.put(EAST, f"east-{i}", "1")
    world.put(WEST, "west", "1")
    world.tick(1100)
    assert (world.get(WEST, "east-0"), world.get(EAST, "west")) == (None, None)
    assert world.replicator.pending() == 7
    world.replicator.holds.release(EAST, now=1100, pace=2.0)
    world.tick(1101)  # 2 per second: one second in, two changes crossed
    assert world.replicator.pending() == 5
    world.tick(1102)
    assert world.replicator.pending() == 3
    world.tick(1110)
    assert world.replicator.pending() == 0
    assert all(world.get(WEST, f"east-{i}") is not None for i in range(6))
    assert world.get(EAST, "west") is not None
    assert world.replicator.holds.quiet  # nothing left to drain: back to the usual path
    world.put(EAST, "after", "1")
    world.tick(1110.6)
    assert world.get(WEST, "after") is not None
