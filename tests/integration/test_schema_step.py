"""Schema changes happen at deploy, on a real PostgreSQL: the schema step migrates (once) as the owner, and a
function that finds the schema older than its code fails loudly rather than migrate.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from ledger_schema.deploy import deploy_schema
from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import emulator_client, function_environment
from tandem.localpg import LocalPostgres, free_port
from tandem.twin.regions import RegionEndpoint
from tandem_core.database import LedgerConnector, SecretCredentials
from tandem_core.ledger import Ledger
from tandem_core.models import Entry, parse_transaction
from tandem_core.schema import SchemaBehind, load_migrations, migrate
from tandem_core.settings import LedgerDbSettings

REGION = "us-east-1"
RESPONSES = "cfn-responses"


@pytest.fixture(scope="module")
def region() -> Iterator[RegionEndpoint]:
    """The region's emulator over HTTP: Secrets Manager, and CloudFormation's response bucket."""
    endpoint = RegionEndpoint(REGION, free_port())
    endpoint.start()
    try:
        urllib.request.urlopen(f"{endpoint.url}/moto-api/reset", data=b"", timeout=10).close()
        emulator_client("s3", REGION, endpoint.url).create_bucket(Bucket=RESPONSES)
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture
def master(pg_server: LocalPostgres, database: str, region: RegionEndpoint) -> dict[str, Any]:
    """The master user's login, its password in Secrets Manager (the schema step's only credential)."""
    sm = emulator_client("secretsmanager", REGION, region.url)
    value = json.dumps({"username": pg_server.user, "password": pg_server.password})
    arn = sm.create_secret(Name=f"ledger-master-{database}", SecretString=value)["ARN"]
    env = {
        "LEDGER_DB_HOST": "127.0.0.1", "LEDGER_DB_PORT": str(pg_server.port), "LEDGER_DB_NAME": database,
        "LEDGER_DB_SSLMODE": "require", "AWS_REGION": REGION, "AWS_ENDPOINT_URL": region.url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "POWERTOOLS_SERVICE_NAME": "ledger_schema",
    }  # fmt: skip
    settings = LedgerDbSettings.from_env({**env, "LEDGER_DB_AUTH": "secret", "LEDGER_DB_SECRET_ARN": arn})
    return {"env": env, "arn": arn, "connector": lambda: LedgerConnector(settings, SecretCredentials(sm, arn))}


def test_the_step_migrates_the_writer_once_as_the_owner(master: dict[str, Any], db: pg8000.native.Connection) -> None:
    first = deploy_schema(master["connector"](), master["connector"](), REGION, wait_seconds=0)
    latest = load_migrations()[-1].version
    assert (first.role, first.version, first.applied) == ("writer", latest, list(range(1, latest + 1)))
    again = deploy_schema(master["connector"](), master["connector"](), REGION, wait_seconds=0)
    assert (again.role, again.applied) == ("writer", [])  # a deploy that changes no schema changes nothing
    assert db.run("SELECT max(version) FROM schema_migration") == [[latest]]


def test_a_cold_start_against_an_older_schema_fails_loudly_and_changes_nothing(
    master: dict[str, Any], db: pg8000.native.Connection
) -> None:
    migrations = load_migrations()
    migrate(db, migrations[:-1])  # the deploy's step has not run for this code
    ledger = Ledger(master["connector"]())  # even the owner's connection: a function never migrates
    body = {"transaction_id": str(uuid.uuid4()), "account_id": "a", "counterparty_id": "b", "amount": "1.00",
            "currency": "EUR", "created_at": "2026-12-07T10:00:00Z"}  # fmt: skip
    with pytest.raises(SchemaBehind, match=rf"lacks {migrations[-1].version:04d}_{migrations[-1].name}.*at deploy"):
        ledger.apply([Entry(parse_transaction(json.dumps(body)), "m1")])
    assert db.run("SELECT max(version) FROM schema_migration") == [[migrations[-2].version]]


def _request(s3: Any, bucket: str, key: str, properties: dict[str, str]) -> dict[str, Any]:
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)
    return {
        "RequestType": "Create", "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:schema",
        "ResponseURL": url, "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1",
        "RequestId": key, "ResourceType": "Custom::LedgerSchema", "LogicalResourceId": "LedgerSchema",
        "ResourceProperties": {"CodeVersion": "1", **properties},
    }  # fmt: skip


def test_cloudformation_gets_success_with_the_schema_version_or_failed_with_the_reason(
    master: dict[str, Any], region: RegionEndpoint
) -> None:
    s3 = emulator_client("s3", REGION, region.url)

    def step(env: dict[str, str], key: str, **properties: str) -> dict[str, Any]:
        request = _request(s3, RESPONSES, key, {"MasterSecretArn": master["arn"], **properties})
        with function_environment(env):
            load_handler("ledger_schema")(request, LambdaContext("schema", REGION, timeout_s=180))
        return dict(json.loads(s3.get_object(Bucket=RESPONSES, Key=key)["Body"].read()))

    answer = step(master["env"], f"ok-{uuid.uuid4()}")
    assert (answer["Status"], answer["Data"]["SchemaVersion"], answer["Data"]["Role"]) == (
        "SUCCESS", str(load_migrations()[-1].version), "writer",
    )  # fmt: skip
    failed = step({**master["env"], "LEDGER_DB_PORT": "1", "LEDGER_DB_TIMEOUT": "1"}, f"down-{uuid.uuid4()}")
    assert failed["Status"] == "FAILED"
    assert "Connection refused" in failed["Reason"], failed["Reason"]
    assert failed["PhysicalResourceId"] == answer["PhysicalResourceId"]  # the same resource, however it went
    unnamed = step(master["env"], f"unnamed-{uuid.uuid4()}", MasterSecretArn="not-an-arn")
    assert unnamed["Status"] == "FAILED"  # answered, never left for CloudFormation to wait an hour on
    assert "MasterSecretArn" in unnamed["Reason"], unnamed["Reason"]
