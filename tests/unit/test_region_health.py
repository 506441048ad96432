"""GET /health answers whether the region can accept work (moto in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import function_environment, ledger_table_keys
from tests.conftest import load_event


@pytest.fixture
def region(aws_env: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="tandem-transactions")["QueueUrl"]
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="tandem-ledger", BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        yield {"sqs": sqs, "ddb": ddb, "queue_url": url}


def health(queue_url: str, table: str = "tandem-ledger") -> dict[str, Any]:
    env = {
        "TRANSACTION_QUEUE_URL": queue_url, "LEDGER_TABLE_NAME": table, "TANDEM_REGION_ROLE": "dr",
        "POWERTOOLS_SERVICE_NAME": "region_health", "AWS_LAMBDA_FUNCTION_NAME": "health",
    }  # fmt: skip
    with function_environment(env):
        handler = load_handler("region_health")
        result: dict[str, Any] = handler(load_event("http_health.json"), LambdaContext("health", "us-east-1"))
    return result


def test_a_region_that_can_accept_work_answers_200(region: dict[str, Any]) -> None:
    response = health(region["queue_url"])
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "status": "ok", "region": "us-east-1", "role": "dr",
        "checks": {"transaction_queue": "ok", "ledger_table": "ok"},
    }  # fmt: skip
    assert response["headers"]["cache-control"] == "no-store"


def test_a_missing_queue_makes_the_region_unavailable(region: dict[str, Any]) -> None:
    region["sqs"].delete_queue(QueueUrl=region["queue_url"])
    response = health(region["queue_url"])
    assert response["statusCode"] == 503
    body = json.loads(response["body"])
    assert body["status"] == "unavailable"
    assert body["checks"]["transaction_queue"] != "ok"
    assert body["checks"]["ledger_table"] == "ok"


def test_a_missing_ledger_table_makes_the_region_unavailable(region: dict[str, Any]) -> None:
    response = health(region["queue_url"], table="no-such-table")
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["checks"]["ledger_table"] == "ResourceNotFoundException"
