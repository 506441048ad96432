"""IAM proven, not hoped: the handler runs in moto with IAM enforced, holding exactly its template policy.

The credentials carry the inline statements of TransactionProcessorFunction from template.yaml (resolved for
this deployment), so a permission the code needs but the template lacks fails here - and every statement
that names a resource is shown to be needed by dropping it. KMS statements are not exercised: moto does not
call KMS on behalf of DynamoDB, S3 or Secrets Manager.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import function_environment, ledger_table_keys
from tandem.localpg import LocalPostgres
from tandem.template import Template
from tandem.twin.extensions import iam_resources
from tests.conftest import load_event

REGION = "us-east-1"
FN = "TransactionProcessorFunction"


@pytest.fixture
def deployment(pg_server: LocalPostgres, database: str) -> Iterator[dict[str, Any]]:
    iam_resources.install()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(TableName="tandem-ledger", BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="tandem-archive-primary")
        secret = json.dumps({"username": pg_server.user, "password": pg_server.password})
        secret_arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="rds!cluster-ledger", SecretString=secret
        )["ARN"]
        tpl = Template.from_file(
            parameters={
                "RegionRole": "primary", "LedgerTableName": "tandem-ledger",
                "ArchiveBucketName": "tandem-archive-primary", "LedgerDbHost": "127.0.0.1",
                "LedgerDbPort": str(pg_server.port), "LedgerDbName": database, "LedgerDbSecretArn": secret_arn,
                "DataKeyArn": f"arn:aws:kms:{REGION}:123456789012:key/data", "PeerRegion": "us-west-2",
                "LedgerDbRootCert": str(pg_server.ca_file),
            },
            region=REGION,
            ssm=lambda name: name,  # the values above are what the SSM parameters would hold
        )  # fmt: skip
        tpl.physical["AppKey"] = {"Ref": "app", "Arn": f"arn:aws:kms:{REGION}:123456789012:key/app"}
        statements = [
            tpl.resolve(st)
            for policy in tpl.properties(FN)["Policies"]
            if isinstance(policy, dict)
            for st in policy["Statement"]
        ]
        yield {"template": tpl, "statements": statements}


def as_moto_authorizes(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AWS authorizes each action of a TransactWriteItems by its item action (Put: dynamodb:PutItem, Update:
    dynamodb:UpdateItem, on the table); moto authorizes the call itself, as dynamodb:TransactWriteItems on "*"
    (it names no table) - not an IAM action, so the template cannot name it. A statement granting both item
    actions brings moto's equivalent along; drop either grant and the equivalent goes with it."""
    out = list(statements)
    for st in statements:
        actions = st.get("Action", [])
        if {"dynamodb:PutItem", "dynamodb:UpdateItem"} <= set([actions] if isinstance(actions, str) else actions):
            out.append({"Effect": "Allow", "Action": "dynamodb:TransactWriteItems", "Resource": "*"})
    return out


def _run_with_policy(deployment: dict[str, Any], statements: list[dict[str, Any]]) -> dict[str, Any]:
    statements = as_moto_authorizes(statements)
    iam = boto3.client("iam", region_name=REGION)
    user = f"fn-{len(iam.list_users()['Users'])}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user, PolicyName="inline",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )  # fmt: skip
    key = iam.create_access_key(UserName=user)["AccessKey"]
    tpl: Template = deployment["template"]
    env = {
        **tpl.function_environment(FN),
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "tandem-transaction_processor",
    }  # fmt: skip
    with function_environment(env):
        handler = load_handler("transaction_processor")
        with enable_iam_authentication():
            result: dict[str, Any] = handler(load_event("sqs_valid_batch.json"), LambdaContext("fn", REGION))
    return result


def test_the_template_policy_is_enough_for_the_handler(deployment: dict[str, Any]) -> None:
    assert _run_with_policy(deployment, deployment["statements"]) == {"batchItemFailures": []}
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName="tandem-ledger")["Items"]
    assert len(items) == 4


@pytest.mark.parametrize("action", ["dynamodb:PutItem", "dynamodb:UpdateItem"])
def test_status_writes_need_both_item_actions(deployment: dict[str, Any], action: str) -> None:
    statements = [
        {**st, "Action": [a for a in st["Action"] if a != action]} if st.get("Sid") == "LedgerTableStatus" else st
        for st in deployment["statements"]
    ]
    with pytest.raises(Exception, match=r"AccessDenied|403|not authorized"):
        _run_with_policy(deployment, statements)


@pytest.mark.parametrize("sid", ["LedgerTableStatus", "ArchiveJournal", "LedgerDbSecret"])
def test_every_resource_statement_is_needed(deployment: dict[str, Any], sid: str) -> None:
    without = [st for st in deployment["statements"] if st.get("Sid") != sid]
    assert len(without) == len(deployment["statements"]) - 1
    with pytest.raises(Exception, match=r"AccessDenied|403|Access Denied|not authorized"):
        _run_with_policy(deployment, without)


def test_the_health_function_runs_with_exactly_its_template_policy(deployment: dict[str, Any]) -> None:
    tpl: Template = deployment["template"]
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="tandem-transactions")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    tpl.physical["TransactionQueue"] = {"Ref": url, "Arn": arn}
    statements = [tpl.resolve(st) for st in tpl.properties("RegionHealthFunction")["Policies"][0]["Statement"]]
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="health")
    iam.put_user_policy(
        UserName="health", PolicyName="inline",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )  # fmt: skip
    key = iam.create_access_key(UserName="health")["AccessKey"]
    env = {
        **tpl.function_environment("RegionHealthFunction"),
        "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_LAMBDA_FUNCTION_NAME": "tandem-region_health",
    }  # fmt: skip
    with function_environment(env):
        handler = load_handler("region_health")
        with enable_iam_authentication():
            response = handler(load_event("http_health.json"), LambdaContext("health", REGION))
    assert response["statusCode"] == 200, response["body"]


def test_a_policy_scoped_to_another_table_is_refused(deployment: dict[str, Any]) -> None:
    statements = [
        {**st, "Resource": st["Resource"].replace("table/tandem-ledger", "table/other")}
        if st.get("Sid") == "LedgerTableStatus"
        else st
        for st in deployment["statements"]
    ]
    with pytest.raises(Exception, match=r"AccessDenied|403"):
        _run_with_policy(deployment, statements)
