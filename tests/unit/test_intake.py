"""The durable ingress (finding 5 of the backlog issue): what a region accepts is recorded in the global table
before it is queued, and after an unplanned failover the new active region applies what the old one accepted
and nothing applied - on moto in-process, and through the intake's handler as API Gateway invokes it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import function_environment, ledger_table_keys
from tandem_core.intake import AcceptedLog, AcceptedReplay, Intake, RejectedBody, partition
from tandem_core.status import status_key
from tests.conftest import transfer

PRIMARY, DR, TABLE = "us-east-1", "us-west-2", "tandem-ledger"
NOW = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)


@pytest.fixture
def aws(aws_env: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=DR)
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        sqs = boto3.client("sqs", region_name=DR)
        yield {"dynamodb": ddb, "sqs": sqs, "queue": sqs.create_queue(QueueName="transactions")["QueueUrl"]}


def queued(aws: dict[str, Any]) -> list[str]:
    bodies = []
    while batch := aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", []):
        bodies += [m["Body"] for m in batch]
        aws["sqs"].delete_message_batch(QueueUrl=aws["queue"], Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])  # fmt: skip
    return bodies


def test_a_message_is_recorded_in_the_global_table_before_it_is_queued(aws: dict[str, Any]) -> None:
    intake = Intake(AcceptedLog(aws["dynamodb"], TABLE), None, aws["sqs"], aws["queue"], PRIMARY, clock=lambda: NOW)
    body = json.dumps(transfer("acc-i1", "acc-i2"))
    assert intake.accept(body, "req-1").message_id
    key = {":p": {"S": partition(PRIMARY, NOW)}}
    (item,) = aws["dynamodb"].query(TableName=TABLE, KeyConditionExpression="pk = :p", ExpressionAttributeValues=key)[
        "Items"
    ]
    assert (item["body"]["S"], item["sk"]["S"]) == (body, f"{NOW.isoformat()}#req-1")
    assert int(item["expires_at"]["N"]) == int(NOW.timestamp()) + 2 * 86400  # the table's TTL attribute
    assert queued(aws) == [body]


@pytest.mark.parametrize(("body", "status"), [(None, 400), ("", 400), ("x" * (256 * 1024 + 1), 413)])
def test_a_body_no_queue_would_take_is_refused_and_nothing_is_recorded(
    aws: dict[str, Any], body: str | None, status: int
) -> None:
    intake = Intake(AcceptedLog(aws["dynamodb"], TABLE), None, aws["sqs"], aws["queue"], PRIMARY, clock=lambda: NOW)
    with pytest.raises(RejectedBody) as refused:
        intake.accept(body, "req-2")
    assert refused.value.status == status
    assert aws["dynamodb"].scan(TableName=TABLE)["Items"] == []


def test_an_accepted_message_is_in_the_other_regions_replica_before_the_answer_or_counted(aws_env: None) -> None:
    """Accepted means durable in both regions: the record goes to the other region's replica first; when that
    region does not answer, to this one's (it replicates later) and the answer says it is not durable there."""
    with mock_aws():
        ddb = {r: boto3.client("dynamodb", region_name=r) for r in (PRIMARY, DR)}
        for client in ddb.values():
            client.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        sqs = boto3.client("sqs", region_name=PRIMARY)
        queue = sqs.create_queue(QueueName="transactions")["QueueUrl"]
        peer = AcceptedLog(ddb[DR], TABLE)
        intake = Intake(AcceptedLog(ddb[PRIMARY], TABLE), peer, sqs, queue, PRIMARY, clock=lambda: NOW)
        assert intake.accept(json.dumps(transfer("acc-p1", "acc-p2")), "r1").durable_in_peer is True
        assert [len(ddb[r].scan(TableName=TABLE)["Items"]) for r in (PRIMARY, DR)] == [0, 1]  # DR holds it now
        ddb[DR].delete_table(TableName=TABLE)  # the other region does not answer (here: its table is gone)
        assert intake.accept(json.dumps(transfer("acc-p3", "acc-p4")), "r2").durable_in_peer is False
        assert len(ddb[PRIMARY].scan(TableName=TABLE)["Items"]) == 1  # kept here, replicated once it can be


def test_after_a_failover_what_the_old_region_accepted_and_nothing_applied_is_queued_here(
    aws: dict[str, Any],
) -> None:
    """Accepted by the primary, replicated here: one applied somewhere (its status item exists: the journal
    covers it), one stranded in the dead primary's queue, one accepted twice (a producer's retry), poison,
    and one accepted before the window."""
    log = AcceptedLog(aws["dynamodb"], TABLE)
    applied, stranded = transfer("acc-a", "acc-b"), transfer("acc-c", "acc-d")
    log.record(PRIMARY, json.dumps(applied), "r1", NOW - timedelta(minutes=3))
    log.record(PRIMARY, json.dumps(stranded), "r2", NOW - timedelta(minutes=2))
    log.record(
        PRIMARY, json.dumps({**stranded, "created_at": "2026-12-07T07:28:30Z"}), "r3", NOW - timedelta(minutes=1)
    )
    log.record(PRIMARY, "not json", "r4", NOW - timedelta(seconds=30))
    log.record(PRIMARY, json.dumps(transfer("acc-e", "acc-f")), "r5", NOW - timedelta(hours=2))
    log.record(DR, json.dumps(transfer("acc-g", "acc-h")), "r6", NOW - timedelta(minutes=1))  # DR's own
    aws["dynamodb"].put_item(
        TableName=TABLE, Item={**status_key(applied["transaction_id"]), "status": {"S": "COMMITTED"}}
    )
    done = AcceptedReplay(log, aws["sqs"], aws["queue"], window_seconds=3600).run(PRIMARY, NOW, deadline=1e12)
    assert done.as_dict() | {"sent_ids": None} == {
        "recorded": 4, "applied_before": 1, "sent": 1, "sent_ids": None, "unparsable": 1,
    }  # fmt: skip
    assert [json.loads(b)["transaction_id"] for b in queued(aws)] == [stranded["transaction_id"]]


def test_the_intake_handler_answers_as_the_direct_integration_does(aws: dict[str, Any]) -> None:
    env = {"AWS_REGION": DR, "TRANSACTION_QUEUE_URL": aws["queue"], "LEDGER_TABLE_NAME": TABLE,
           "POWERTOOLS_SERVICE_NAME": "transaction_intake"}  # fmt: skip
    with function_environment(env):
        handler = load_handler("transaction_intake")
        body = json.dumps(transfer("acc-h1", "acc-h2"))
        event = {"version": "2.0", "requestContext": {"requestId": "api-1"}, "isBase64Encoded": True,
                 "body": base64.b64encode(body.encode()).decode()}  # fmt: skip
        answer = handler(event, LambdaContext("tandem-intake", PRIMARY))
        assert answer["statusCode"] == 200
        assert json.loads(answer["body"])["SendMessageResponse"]["SendMessageResult"]["MessageId"]
        assert queued(aws) == [body]
        empty = handler({"version": "2.0", "requestContext": {"requestId": "api-2"}}, LambdaContext("x", PRIMARY))
        assert (empty["statusCode"], json.loads(empty["body"])) == (400, {"message": "the message body is empty"})


def test_what_the_old_region_accepted_in_its_last_minute_is_sent_even_with_a_status_item(aws: dict[str, Any]) -> None:
    """Its status item may have replicated while its ledger row died with the old writer at the promotion;
    the ledger, not the status item, says whether it is applied here: a repeat is a duplicate."""
    log = AcceptedLog(aws["dynamodb"], TABLE)
    last = transfer("acc-l1", "acc-l2")
    log.record(PRIMARY, json.dumps(last), "r1", NOW - timedelta(seconds=20))
    aws["dynamodb"].put_item(TableName=TABLE, Item={**status_key(last["transaction_id"]), "status": {"S": "COMMITTED"}})
    done = AcceptedReplay(log, aws["sqs"], aws["queue"], recent_seconds=60).run(PRIMARY, NOW, deadline=1e12)
    assert (done.applied_before, done.sent) == (0, [last["transaction_id"]])
