"""moto's TransactWriteItems as patched by tandem.moto_ext: the same outcomes, rolled back item by item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends

from tandem import moto_ext
from tandem.local import ledger_table_keys

TABLE = "ledger"


def key(n: int) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"TXN#{n}"}, "sk": {"S": "STATUS"}}


def put(n: int, value: str) -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {**key(n), "v": {"S": value}}}}


@pytest.fixture
def ddb(aws_env: None) -> Iterator[Any]:
    moto_ext.apply()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        yield client


def items(ddb: Any) -> dict[str, str]:
    return {i["pk"]["S"]: i["v"]["S"] for i in ddb.scan(TableName=TABLE)["Items"]}


def test_a_committed_transaction_writes_every_action(ddb: Any) -> None:
    ddb.transact_write_items(TransactItems=[put(1, "a"), put(2, "b")])
    assert items(ddb) == {"TXN#1": "a", "TXN#2": "b"}


def test_a_cancelled_transaction_leaves_every_item_as_it_was_and_says_why_per_action(ddb: Any) -> None:
    ddb.put_item(TableName=TABLE, Item={**key(1), "v": {"S": "first"}})
    ddb.put_item(TableName=TABLE, Item={**key(9), "v": {"S": "bystander"}})
    table = dynamodb_backends["123456789012"]["us-east-1"].tables[TABLE]
    update = {"Update": {"TableName": TABLE, "Key": key(1), "UpdateExpression": "SET v = :v",
                         "ExpressionAttributeValues": {":v": {"S": "changed"}}}}  # fmt: skip
    clash = {"Put": {**put(3, "never")["Put"], "ConditionExpression": "attribute_exists(pk)"}}
    with pytest.raises(ClientError) as err:
        ddb.transact_write_items(TransactItems=[update, put(2, "new"), clash])
    reasons = [r["Code"] for r in err.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert items(ddb) == {"TXN#1": "first", "TXN#9": "bystander"}  # the update undone, the new item gone
    assert dynamodb_backends["123456789012"]["us-east-1"].tables[TABLE] is table  # no table copy swapped in


def test_two_actions_on_one_item_are_refused_whole(ddb: Any) -> None:
    with pytest.raises(ClientError, match="multiple operations on one item"):
        ddb.transact_write_items(TransactItems=[put(1, "a"), put(2, "b"), put(1, "c")])
    assert items(ddb) == {}
