"""What moto lacks and the twin adds, proven through plain boto3 and the database URIs of `status --json`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import eventually
from tests.twin.conftest import aws, pg

PRIMARY, DR = "us-east-1", "us-west-2"


def test_global_table_items_replicate_to_the_other_region(twin: dict[str, Any]) -> None:
    table = twin["regions"][PRIMARY]["resources"]["ledger_table"]
    key = {"pk": {"S": f"PROBE#{uuid.uuid4()}"}, "sk": {"S": "x"}}
    aws(twin, PRIMARY, "dynamodb").put_item(TableName=table, Item={**key, "v": {"S": "from-east"}})
    other = aws(twin, DR, "dynamodb")
    assert eventually(lambda: other.get_item(TableName=table, Key=key).get("Item"))["v"] == {"S": "from-east"}
    other.put_item(TableName=table, Item={**key, "v": {"S": "from-west"}})
    east = aws(twin, PRIMARY, "dynamodb")
    assert eventually(lambda: east.get_item(TableName=table, Key=key)["Item"]["v"] == {"S": "from-west"})


def test_paused_replication_holds_changes_until_resumed(twin: dict[str, Any], twin_dir: Any) -> None:
    from tandem.twin.control import call

    table = twin["regions"][PRIMARY]["resources"]["ledger_table"]
    key = {"pk": {"S": f"PROBE#{uuid.uuid4()}"}, "sk": {"S": "paused"}}
    other = aws(twin, DR, "dynamodb")
    paused = call(twin_dir, "POST", "/replication/pause")
    try:
        assert paused["replication"]["paused"] == {"aurora": True, "dynamodb": True, "s3": True}
        aws(twin, PRIMARY, "dynamodb").put_item(TableName=table, Item=key)
        time.sleep(0.5)  # 300 emulated seconds at x600: far past the 0.5 s lag
        assert "Item" not in other.get_item(TableName=table, Key=key)
        assert call(twin_dir, "GET", "/status")["replication"]["dynamodb_pending_changes"] >= 1
    finally:
        call(twin_dir, "POST", "/replication/resume")
    assert eventually(lambda: other.get_item(TableName=table, Key=key).get("Item"))


def test_archive_objects_replicate_with_the_replica_status(twin: dict[str, Any]) -> None:
    src, dst = (twin["regions"][r]["resources"]["archive_bucket"] for r in (PRIMARY, DR))
    key = f"archive/probe/{uuid.uuid4()}.jsonl"
    aws(twin, PRIMARY, "s3").put_object(Bucket=src, Key=key, Body=b'{"probe": 1}\n')
    s3_dr = aws(twin, DR, "s3")

    def replica() -> Any:
        try:
            return s3_dr.head_object(Bucket=dst, Key=key)
        except s3_dr.exceptions.ClientError:
            return None

    head = eventually(replica)
    assert head["ReplicationStatus"] == "REPLICA"
    assert s3_dr.get_object(Bucket=dst, Key=key)["Body"].read() == b'{"probe": 1}\n'


def test_disabling_the_mapping_stops_consumption(twin: dict[str, Any]) -> None:
    lam, sqs = aws(twin, PRIMARY, "lambda"), aws(twin, PRIMARY, "sqs")
    queue = twin["regions"][PRIMARY]["resources"]["queue_url"]
    mapping = lam.list_event_source_mappings()["EventSourceMappings"][0]
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    try:
        sqs.send_message(QueueUrl=queue, MessageBody="not even json")
        time.sleep(1.0)
        attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"
    finally:
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)

    def drained() -> bool:
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return bool(attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0")

    assert eventually(drained, timeout=30)  # consumed again; the poison ends in the DLQ after its retries
    dlq = twin["regions"][PRIMARY]["resources"]["dlq_url"]
    # the redrive takes the message off the queue before it lands in the DLQ: look until it is there
    got = eventually(lambda: sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages"))
    assert [m["Body"] for m in got] == ["not even json"]
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=got[0]["ReceiptHandle"])


def test_an_alarm_goes_to_alarm_on_the_compressed_clock_and_its_event_reaches_the_target(
    twin: dict[str, Any],
) -> None:
    cw, events, sqs = aws(twin, DR, "cloudwatch"), aws(twin, DR, "events"), aws(twin, DR, "sqs")
    name = f"probe-{uuid.uuid4().hex[:8]}"
    inbox = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name=name,
        EventPattern=json.dumps(
            {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
             "detail": {"alarmName": [name], "state": {"value": ["ALARM"]}}}
        ),
    )  # fmt: skip
    events.put_targets(Rule=name, Targets=[{"Id": "inbox", "Arn": inbox_arn}])
    cw.put_metric_alarm(
        AlarmName=name, Namespace="Tandem/Probe", MetricName="Heartbeat", Statistic="Maximum", Period=60,
        EvaluationPeriods=2, Threshold=1, ComparisonOperator="LessThanThreshold", TreatMissingData="breaching",
    )  # fmt: skip
    # nothing arrives: with TreatMissingData=breaching the alarm fires after two emulated minutes (0.2 s at x600)
    alarm = eventually(
        lambda: cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"] == "ALARM", timeout=15
    )
    assert alarm
    msgs = eventually(lambda: sqs.receive_message(QueueUrl=inbox, WaitTimeSeconds=0).get("Messages"), timeout=5)
    event = json.loads(msgs[0]["Body"])
    assert event["detail-type"] == "CloudWatch Alarm State Change"
    assert event["detail"]["alarmName"] == name
    assert event["detail"]["state"]["value"] == "ALARM"
    assert event["region"] == DR


def _writer(twin: dict[str, Any], region: str) -> bool:
    clusters = aws(twin, region, "rds").describe_global_clusters(GlobalClusterIdentifier=twin["global_cluster"])
    members = clusters["GlobalClusters"][0]["GlobalClusterMembers"]
    cluster = twin["regions"][region]["cluster"]
    return bool(next(m["IsWriter"] for m in members if m["DBClusterArn"].endswith(f":cluster:{cluster}")))


def _writer_and_reader(twin: dict[str, Any]) -> tuple[str, str]:
    """(current writer region, the other region): earlier tests may already have moved the writer."""
    return (PRIMARY, DR) if _writer(twin, PRIMARY) else (DR, PRIMARY)


@pytest.mark.parametrize("mode", ["switchover", "failover"])
def test_promotion_through_the_rds_api_moves_the_writer_and_keeps_committed_rows(
    twin: dict[str, Any], mode: str
) -> None:
    current, target = _writer_and_reader(twin)
    conn = pg(twin, current)
    conn.run("CREATE TABLE IF NOT EXISTS promo (id text PRIMARY KEY)")
    ids = [f"{mode}-{i}-{uuid.uuid4().hex[:6]}" for i in range(50)]
    for i in ids:
        conn.run("INSERT INTO promo VALUES (:i)", i=i)
    conn.close()
    reader = pg(twin, target)
    assert eventually(lambda: reader.run("SELECT count(*) FROM promo WHERE id = ANY(:ids)", ids=ids)[0][0] == 50)
    reader.close()
    rds = aws(twin, target, "rds")
    member = twin["regions"][target]["cluster"]
    if mode == "switchover":
        rds.switchover_global_cluster(GlobalClusterIdentifier=twin["global_cluster"], TargetDbClusterIdentifier=member)
    else:
        rds.failover_global_cluster(
            GlobalClusterIdentifier=twin["global_cluster"], TargetDbClusterIdentifier=member, AllowDataLoss=True
        )
    assert _writer(twin, target) is True
    assert _writer(twin, current) is False
    new_writer = pg(twin, target)
    assert new_writer.run("SELECT pg_is_in_recovery()") == [[False]]
    assert new_writer.run("SELECT count(*) FROM promo WHERE id = ANY(:ids)", ids=ids) == [[50]]
    new_writer.run("INSERT INTO promo VALUES (:i)", i=f"after-{mode}-{uuid.uuid4().hex[:6]}")
    new_writer.close()
    old = pg(twin, current)
    assert eventually(lambda: old.run("SELECT pg_is_in_recovery()") == [[True]])  # rejoined as a standby
    old.close()


def test_failover_while_the_writer_region_is_down_promotes_what_the_standby_had(
    twin: dict[str, Any], twin_dir: Any
) -> None:
    from tandem.twin.control import call

    current, target = _writer_and_reader(twin)
    conn = pg(twin, current)
    conn.run("CREATE TABLE IF NOT EXISTS promo (id text PRIMARY KEY)")
    conn.run("INSERT INTO promo VALUES (:i)", i=f"before-outage-{uuid.uuid4().hex[:6]}")
    conn.close()
    reader = pg(twin, target)
    replayed = eventually(lambda: reader.run("SELECT count(*) FROM promo")[0][0])
    reader.close()
    call(twin_dir, "POST", f"/outage/{current}")
    try:
        aws(twin, target, "rds").failover_global_cluster(
            GlobalClusterIdentifier=twin["global_cluster"],
            TargetDbClusterIdentifier=twin["regions"][target]["cluster"],
            AllowDataLoss=True,
        )
        promoted = pg(twin, target)
        assert promoted.run("SELECT pg_is_in_recovery()") == [[False]]
        assert promoted.run("SELECT count(*) FROM promo")[0][0] >= replayed
        promoted.close()
    finally:
        call(twin_dir, "POST", f"/restore/{current}")
    back = pg(twin, current)
    assert back.run("SELECT pg_is_in_recovery()") == [[True]]  # the old writer returns as a standby
    back.close()
