"""The unmodified handler against a local region: moto server over HTTP and a real PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import LocalRegion, function_environment, local_region
from tandem_core.models import InvalidMessage, parse_transaction
from tests.conftest import load_event

FN = "transaction_processor"


@pytest.fixture(scope="module")
def region() -> Iterator[LocalRegion]:
    with local_region() as local:
        yield local


@pytest.fixture
def invoke(region: LocalRegion) -> Iterator[Any]:
    with function_environment(region.function_env(FN)):
        handler = load_handler(FN)

        def call(event: dict[str, Any]) -> dict[str, Any]:
            result: dict[str, Any] = handler(event, LambdaContext(f"tandem-{FN}", region.region))
            return result

        yield call


def ledger(region: LocalRegion) -> pg8000.native.Connection:
    pg = region.postgres
    return pg8000.native.Connection(
        user=pg.user, password=pg.password, host="127.0.0.1", port=pg.port, database=pg.database
    )


def failures(response: dict[str, Any]) -> set[str]:
    return {f["itemIdentifier"] for f in response["batchItemFailures"]}


def ids(event: dict[str, Any]) -> list[str]:
    out = []
    for r in event["Records"]:
        try:
            out.append(parse_transaction(r["body"]).transaction_id)
        except InvalidMessage:
            out.append("")
    return out


def test_valid_batch_commits_everything_and_records_it(region: LocalRegion, invoke: Any) -> None:
    event = load_event("sqs_valid_batch.json")
    assert invoke(event) == {"batchItemFailures": []}
    conn = ledger(region)
    rows = conn.run(
        "SELECT CAST(transaction_id AS text) FROM ledger_transaction WHERE transaction_id = ANY(CAST(:i AS uuid[]))",
        i=ids(event),
    )
    assert len(rows or []) == 4
    status = region.client("dynamodb").get_item(
        TableName=region.resources.table, Key={"pk": {"S": f"TXN#{ids(event)[0]}"}, "sk": {"S": "STATUS"}}
    )["Item"]
    assert status["status"]["S"] == "COMMITTED"
    assert status["amount_minor"]["N"] == "12550"
    objects = region.client("s3").list_objects_v2(Bucket=region.resources.bucket, Prefix="archive/")["Contents"]
    bodies = [
        region.client("s3").get_object(Bucket=region.resources.bucket, Key=o["Key"])["Body"].read().decode()
        for o in objects
    ]
    assert any(ids(event)[0] in b for b in bodies)

    before = conn.run("SELECT account_id, balance_minor FROM account_balance ORDER BY 1")
    replay = copy.deepcopy(event)
    for r in replay["Records"]:
        r["messageId"] = r["messageId"][::-1]  # the same bodies redelivered as new messages
    assert invoke(replay) == {"batchItemFailures": []}
    assert conn.run("SELECT account_id, balance_minor FROM account_balance ORDER BY 1") == before
    conn.close()


def test_invalid_records_fail_alone_and_valid_ones_commit(region: LocalRegion, invoke: Any) -> None:
    event = load_event("sqs_invalid_records.json")
    response = invoke(event)
    valid = [r["messageId"] for r in event["Records"] if _parses(r["body"])]
    assert failures(response) == {r["messageId"] for r in event["Records"]} - set(valid)
    assert len(valid) == 1
    conn = ledger(region)
    committed = conn.run("SELECT count(*) FROM ledger_transaction WHERE message_id = :m", m=valid[0])
    assert committed == [[1]]
    conn.close()


def _parses(body: str) -> bool:
    try:
        parse_transaction(body)
    except InvalidMessage:
        return False
    return True


def test_duplicates_apply_once_and_the_conflict_is_reported(region: LocalRegion, invoke: Any) -> None:
    event = load_event("sqs_duplicates_and_conflict.json")
    records = event["Records"]
    response = invoke(event)
    assert failures(response) == {records[3]["messageId"]}  # same id, different amount
    conn = ledger(region)
    row = conn.run(
        "SELECT amount_minor, message_id FROM ledger_transaction WHERE transaction_id = CAST(:t AS uuid)",
        t=json.loads(records[0]["body"])["transaction_id"],
    )
    assert row == [[25000, records[0]["messageId"]]]
    bal = dict(conn.run("SELECT account_id, balance_minor FROM account_balance WHERE currency = 'GBP'") or [])
    assert bal == {"acc-5005": -25000 + 1000, "acc-6006": 25000 - 1000}
    conn.close()


def test_an_all_poison_batch_reports_every_record_without_failing_the_invocation(
    region: LocalRegion, invoke: Any
) -> None:
    event = load_event("sqs_invalid_records.json")
    event["Records"] = [r for r in event["Records"] if not _parses(r["body"])]
    assert failures(invoke(event)) == {r["messageId"] for r in event["Records"]}


def test_when_the_database_is_unreachable_the_whole_batch_is_retried(region: LocalRegion) -> None:
    env = region.function_env(FN) | {"LEDGER_DB_PORT": "1", "LEDGER_DB_TIMEOUT": "1"}
    with function_environment(env):
        handler = load_handler(FN)
        with pytest.raises((OSError, pg8000.native.InterfaceError), match=r"127\.0\.0\.1|refused"):
            handler(load_event("sqs_valid_batch.json"), LambdaContext(f"tandem-{FN}", region.region))


def test_a_non_sqs_event_is_refused_clearly(invoke: Any) -> None:
    with pytest.raises(ValueError, match="not an SQS event"):
        invoke({"hello": "world"})
