"""IAM proven, not hoped: the handler runs in moto with IAM enforced, holding exactly its template policy.

The credentials carry the inline statements of TransactionProcessorFunction from template.yaml (resolved for
this deployment), so a permission the code needs but the template lacks fails here - and every statement
that names a resource is shown to be needed by dropping it. The database login goes through the cluster
endpoints (IAM database authentication), which ask moto's IAM whether the token's signer may rds-db:connect
as the processor's role. KMS statements are not exercised: moto does not
call KMS on behalf of DynamoDB, S3 or Secrets Manager.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.iam.models import iam_backends

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import function_environment, ledger_table_keys
from tandem.localpg import LocalPostgres
from tandem.template import Template
from tandem.twin.endpoints import WRITER_HOST, Endpoints
from tandem.twin.extensions import iam_resources
from tandem_core.schema import migrate
from tests.conftest import load_event

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER = "cluster-LEDGERTEST0123456789"
FN = "TransactionProcessorFunction"


@pytest.fixture
def deployment(pg_server: LocalPostgres, database: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    iam_resources.install()
    schema_step(pg_server, database)
    writer = tmp_path / "writer"
    writer.touch()  # this region holds the writer: its cluster endpoint is active
    with mock_aws():
        endpoints = Endpoints(
            pg_server.port, writer, REGION, pg_server.data_dir / "server.crt",
            pg_server.data_dir / "server.key", keys=_moto_secret_key, authorize=_moto_allows_connect,
        )  # fmt: skip
        endpoints.listen()  # in this process: it reads moto's IAM users and their policies
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
                "ArchiveBucketName": "tandem-archive-primary", "LedgerDbHost": WRITER_HOST,
                "LedgerDbPort": str(pg_server.port), "LedgerDbName": database, "LedgerDbSecretArn": secret_arn,
                "LedgerDbClusterResourceId": CLUSTER, "DataKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/data",
                "PeerRegion": "us-west-2", "LedgerDbRootCert": str(pg_server.ca_file),
            },
            region=REGION,
            ssm=lambda name: name,  # the values above are what the SSM parameters would hold
        )  # fmt: skip
        tpl.physical["AppKey"] = {"Ref": "app", "Arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/app"}
        statements = [
            tpl.resolve(st)
            for policy in tpl.properties(FN)["Policies"]
            if isinstance(policy, dict)
            for st in policy["Statement"]
        ]
        yield {"template": tpl, "statements": statements}
        endpoints.close()


def schema_step(pg_server: LocalPostgres, database: str) -> None:
    """What the deploy does before the processor runs: Aurora's rds_iam role, then the migrations."""
    conn = pg_server.connect(database)
    try:
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'"):
            conn.run("CREATE ROLE rds_iam NOLOGIN")
        migrate(conn)
    finally:
        conn.close()


def _moto_user(key_id: str) -> Any:
    users = iam_backends[ACCOUNT]["global"].users.values()
    return next((u for u in users if any(k.access_key_id == key_id for k in u.access_keys)), None)


def _moto_secret_key(key_id: str) -> str | None:
    user = _moto_user(key_id)
    return None if user is None else next(k.secret_access_key for k in user.access_keys if k.access_key_id == key_id)


def _moto_allows_connect(key_id: str, db_user: str) -> str | None:
    """IAM's answer for rds-db:connect by the token's signer, from its policies in moto (moto's own evaluator)."""
    resource = f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{CLUSTER}/{db_user}"
    user = _moto_user(key_id)
    answers = [IAMPolicy(doc).is_action_permitted("rds-db:connect", resource) for doc in user.policies.values()]
    if PermissionResult.DENIED in answers or PermissionResult.PERMITTED not in answers:
        return f"{user.name} is not authorized to perform rds-db:connect on {resource}"
    return None


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


@pytest.mark.parametrize("sid", ["LedgerTableStatus", "ArchiveJournal", "LedgerDbLogin"])
def test_every_resource_statement_is_needed(deployment: dict[str, Any], sid: str) -> None:
    without = [st for st in deployment["statements"] if st.get("Sid") != sid]
    assert len(without) == len(deployment["statements"]) - 1
    with pytest.raises(Exception, match=r"AccessDenied|403|Access Denied|not authorized|PAM authentication failed"):
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
