"""The master secret rotates (infra_global's hosted PostgreSQL single-user rotation) on a real PostgreSQL behind
the cluster endpoints: only the new password logs in afterwards, a session opened before keeps working, a new
one follows the secret, and the functions - IAM tokens, their own roles - never notice.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import LocalRegion, function_environment, local_region
from tandem.twin.endpoints import WRITER_HOST
from tandem_core.database import LedgerConnector, SecretCredentials, sqlstate
from tandem_core.settings import LedgerDbSettings
from tests.conftest import load_event

FN = "transaction_processor"


@pytest.fixture(scope="module")
def region() -> Iterator[LocalRegion]:
    with local_region() as local:
        yield local


def login(secret: dict[str, Any]) -> pg8000.native.Connection:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    return pg8000.native.Connection(
        user=secret["username"], password=secret["password"], host=secret["host"], port=int(secret["port"]),
        database="postgres", ssl_context=tls, timeout=5,
    )  # fmt: skip


def test_a_rotation_changes_the_password_the_database_takes_and_loses_no_session_or_batch(region: LocalRegion) -> None:
    sm, arn = region.client("secretsmanager"), region.resources.secret_arn
    described = sm.describe_secret(SecretId=arn)
    assert described["RotationEnabled"] is True
    assert described["RotationRules"]["AutomaticallyAfterDays"] == 30
    assert described["RotationLambdaARN"].endswith("-ledger-db-rotation")  # AWS's hosted function, by its name
    before = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])
    assert before["host"] == WRITER_HOST  # the cluster endpoint the attachment wrote into it
    settings = LedgerDbSettings.from_env({
        "LEDGER_DB_HOST": WRITER_HOST, "LEDGER_DB_PORT": str(before["port"]), "LEDGER_DB_NAME": "postgres",
        "LEDGER_DB_AUTH": "secret", "LEDGER_DB_SECRET_ARN": arn, "LEDGER_DB_SSLMODE": "require",
    })  # fmt: skip
    deploy_step = LedgerConnector(settings, SecretCredentials(sm, arn))
    held = deploy_step.connection()  # a session open before the rotation (the secret's old value cached)

    rotated = sm.rotate_secret(SecretId=arn)

    after = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])
    assert after["password"] != before["password"]
    assert {k: v for k, v in after.items() if k != "password"} == {k: v for k, v in before.items() if k != "password"}
    assert json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")["SecretString"]) == before
    assert sm.get_secret_value(SecretId=arn)["VersionId"] == rotated["VersionId"]
    assert not any("AWSPENDING" in stages and "AWSCURRENT" not in stages
                   for stages in sm.describe_secret(SecretId=arn)["VersionIdsToStages"].values())  # fmt: skip
    with pytest.raises(pg8000.native.DatabaseError) as refused:
        login(before)
    assert sqlstate(refused.value) == "28P01"
    login(after).close()
    assert held.run("SELECT 1") == [[1]]  # the open session is not cut
    deploy_step.discard()
    assert deploy_step.connection().run("SELECT current_user") == [[after["username"]]]  # refused, re-read, in

    with function_environment(region.function_env(FN)):  # the processor logs in with IAM as its own role
        response = load_handler(FN)(load_event("sqs_valid_batch.json"), LambdaContext(f"tandem-{FN}", region.region))
    assert response == {"batchItemFailures": []}
