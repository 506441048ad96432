"""Fencing: the processor's view of the control record, the processing switch, and forwarding stranded messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.local import ledger_table_keys
from tandem_core.control import ControlStore, NewExecution
from tandem_core.fencing import Fence, Fenced, ProcessingSwitch
from tandem_core.forwarding import QueueForwarder

TABLE, PRIMARY, DR = "tandem-ledger", "us-east-1", "us-west-2"
PARAMETER = "/tandem/dr/processing-enabled"


class Counting:
    """A DynamoDB client that counts GetItem calls (how often the fence really reads)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0

    def get_item(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def world(aws_env: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        clients = {r: {s: boto3.client(s, region_name=r) for s in ("dynamodb", "sqs", "lambda", "ssm", "iam")}
                   for r in (PRIMARY, DR)}  # fmt: skip
        clients[DR]["dynamodb"].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        yield clients


def _fence(world: dict[str, Any], region: str, now: list[float]) -> tuple[Fence, Counting]:
    db = Counting(world[DR]["dynamodb"])
    return Fence(ControlStore(db, TABLE, PRIMARY), region, max_age=2.0, clock=lambda: now[0]), db


def test_before_any_failover_the_primary_commits_and_dr_is_fenced(world: dict[str, Any]) -> None:
    now = [0.0]
    primary, _ = _fence(world, PRIMARY, now)
    assert primary.check().epoch == 0
    dr, _ = _fence(world, DR, now)
    with pytest.raises(Fenced, match=r"fenced: us-east-1 is the active region \(epoch 0\), not us-west-2"):
        dr.check()


def test_a_failover_fences_the_old_primary_within_the_cache_age(world: dict[str, Any]) -> None:
    now = [100.0]
    fence, db = _fence(world, PRIMARY, now)
    fence.check()
    ControlStore(world[DR]["dynamodb"], TABLE, PRIMARY).acquire(
        NewExecution("x1", "failover", "failover", DR), now=1_800_000_000.0, lease_seconds=120
    )
    now[0] += 1.9
    fence.check()  # still the cached record: no read within max_age
    assert db.reads == 1
    now[0] += 0.1
    with pytest.raises(Fenced) as fenced:
        fence.check()
    assert (fenced.value.record.active_region, fenced.value.record.epoch, db.reads) == (DR, 1, 2)


def test_a_thawed_environment_reads_the_record_again_however_little_its_monotonic_clock_moved(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 6 of the failover issue: a frozen sandbox's monotonic clock may stand still; the wall clock
    does not. A wall clock stepped back expires the cache too."""
    wall = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)  # frozen: never moves
    db = Counting(world[DR]["dynamodb"])
    fence = Fence(ControlStore(db, TABLE, PRIMARY), PRIMARY, max_age=2.0)
    fence.check()
    ControlStore(world[DR]["dynamodb"], TABLE, PRIMARY).acquire(
        NewExecution("x1", "failover", "failover", DR), now=wall[0], lease_seconds=120
    )
    wall[0] += 600.0  # ten minutes frozen, then a batch arrives
    with pytest.raises(Fenced):
        fence.check()
    wall[0] -= 30.0  # stepped back
    with pytest.raises(Fenced):
        fence.check()
    assert db.reads == 3


def _processor(world: dict[str, Any], region: str, enabled: bool) -> ProcessingSwitch:
    c = world[region]
    role = c["iam"].create_role(RoleName=f"fn-{region}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    c["lambda"].create_function(FunctionName="processor", Runtime="python3.12", Role=role, Handler="x.y",
                                Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})  # fmt: skip
    queue = c["sqs"].create_queue(QueueName="transactions")["QueueUrl"]
    arn = c["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    c["lambda"].create_event_source_mapping(EventSourceArn=arn, FunctionName="processor", Enabled=enabled)
    c["ssm"].put_parameter(Name=PARAMETER, Value=str(enabled).lower(), Type="String")
    return ProcessingSwitch(region, c["lambda"], c["ssm"], "processor", PARAMETER)


def test_the_switch_turns_the_mapping_and_records_it_for_the_next_deploy(world: dict[str, Any]) -> None:
    switch = _processor(world, DR, enabled=False)
    assert not switch.is_on()
    assert switch.set(enabled=True) == "us-west-2 processing enabled"
    assert switch.is_on()
    assert world[DR]["ssm"].get_parameter(Name=PARAMETER)["Parameter"]["Value"] == "true"
    assert switch.set(enabled=True) == "us-west-2 processing enabled (already)"
    assert switch.set(enabled=False) == "us-west-2 processing disabled"
    assert not switch.is_on()
    assert world[DR]["ssm"].get_parameter(Name=PARAMETER)["Parameter"]["Value"] == "false"


def test_a_switch_without_a_mapping_says_so(world: dict[str, Any]) -> None:
    switch = ProcessingSwitch(DR, world[DR]["lambda"], world[DR]["ssm"], "processor", PARAMETER)
    with pytest.raises(LookupError, match="processor has no SQS event source mapping in us-west-2"):
        switch.set(enabled=False)


def _queues(world: dict[str, Any]) -> tuple[str, str]:
    return (
        world[DR]["sqs"].create_queue(QueueName="transactions")["QueueUrl"],
        world[PRIMARY]["sqs"].create_queue(QueueName="transactions")["QueueUrl"],
    )


def _bodies(sqs: Any, url: str) -> list[str]:
    out: list[str] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        out += [m["Body"] for m in batch]
    return out


def test_forwarding_moves_every_message_with_its_body_and_empties_the_queue(world: dict[str, Any]) -> None:
    local, active = _queues(world)
    sent = [f'{{"n": {i}}}' for i in range(23)]
    for body in sent:
        world[DR]["sqs"].send_message(QueueUrl=local, MessageBody=body)
    forwarder = QueueForwarder(world[DR]["sqs"], local, world[PRIMARY]["sqs"], active)
    done = forwarder.drain(limit=100, deadline=float("inf"))
    assert (done.moved, done.refused) == (23, 0)
    assert sorted(_bodies(world[PRIMARY]["sqs"], active)) == sorted(sent)
    attributes = world[DR]["sqs"].get_queue_attributes(QueueUrl=local, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    )


def test_forwarding_stops_at_the_limit_and_leaves_the_rest(world: dict[str, Any]) -> None:
    local, active = _queues(world)
    for i in range(15):
        world[DR]["sqs"].send_message(QueueUrl=local, MessageBody=str(i))
    done = QueueForwarder(world[DR]["sqs"], local, world[PRIMARY]["sqs"], active).drain(limit=12, deadline=1e18)
    assert done.moved == 12
    assert len(_bodies(world[DR]["sqs"], local)) == 3


def test_an_active_region_that_does_not_take_them_loses_nothing(world: dict[str, Any]) -> None:
    local, _ = _queues(world)
    for i in range(5):
        world[DR]["sqs"].send_message(QueueUrl=local, MessageBody=str(i))
    gone = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    with pytest.raises(ClientError):
        QueueForwarder(world[DR]["sqs"], local, world[PRIMARY]["sqs"], gone).drain(limit=100, deadline=1e18)
    attributes = world[DR]["sqs"].get_queue_attributes(QueueUrl=local, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "5"  # back within the in-flight timeout, not deleted
