"""The unmodified handler against a local region: moto server over HTTP and a real PostgreSQL."""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.local import LocalRegion, function_environment, local_region
from tandem_core.archive import REFUSED, Journal
from tandem_core.models import InvalidMessage, parse_transaction
from tests.conftest import load_event, transfer

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
    return region.postgres.connect()


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


def test_a_replay_carrying_one_message_twice_reports_it_committed(region: LocalRegion, invoke: Any) -> None:
    """Two journal lines of one message (a batch retried after its journal write) in one replay request:
    the ledger lacked it, so the answer is ``committed`` (once), never overwritten by ``duplicate``."""
    body = transfer("acc-twice-a", "acc-twice-b", amount="3.00")
    line = {"message_id": f"m-{uuid.uuid4()}", "transaction": body}
    answer = invoke({"replay": [line, copy.deepcopy(line)]})
    assert answer["replayed"] == [
        {"message_id": line["message_id"], "outcome": "committed", "reason": None,
         "transaction_id": body["transaction_id"]}
    ]  # fmt: skip
    conn = ledger(region)
    assert conn.run("SELECT balance_minor FROM account_balance WHERE account_id = 'acc-twice-a'") == [[-300]]
    conn.close()


def status_of(region: LocalRegion, transaction_id: str) -> dict[str, Any]:
    item: dict[str, Any] = region.client("dynamodb").get_item(
        TableName=region.resources.table, Key={"pk": {"S": f"TXN#{transaction_id}"}, "sk": {"S": "STATUS"}},
        ConsistentRead=True,
    )["Item"]  # fmt: skip
    return item


def test_a_committed_transfer_retried_with_a_new_created_at_succeeds_and_its_status_follows_the_ledger(
    region: LocalRegion, invoke: Any
) -> None:
    """Finding 2: the producer retries X with a re-stamped ``created_at``: the same transfer, so the message
    succeeds as a duplicate and the status stays what the ledger holds (its first ``created_at``)."""
    body = transfer("acc-restamp-a", "acc-restamp-b", amount="4.00")
    assert invoke(sqs_event([json.dumps(body)])) == {"batchItemFailures": []}
    retry = {**body, "created_at": "2026-11-28T10:16:30Z"}
    assert invoke(sqs_event([json.dumps(retry)])) == {"batchItemFailures": []}
    conn = ledger(region)
    assert conn.run("SELECT balance_minor FROM account_balance WHERE account_id = 'acc-restamp-a'") == [[-400]]
    conn.close()
    status = status_of(region, body["transaction_id"])
    assert (status["status"]["S"], status["created_at"]["S"]) == ("COMMITTED", "2026-11-28T10:15:00Z")


def test_the_ledger_is_the_truth_when_the_status_item_describes_another_payload(
    region: LocalRegion, invoke: Any
) -> None:
    """Finding 2: the status item of X arrived from the old primary (its ledger row died with the old writer);
    DR's ledger commits X as the producer resent it. The message succeeds, the status says what DR's ledger
    holds, and what it replaced is kept beside it."""
    body = transfer("acc-truth-a", "acc-truth-b", amount="7.00")
    old = {**body, "amount": "5.00"}
    region.client("dynamodb").put_item(
        TableName=region.resources.table,
        Item={"pk": {"S": f"TXN#{body['transaction_id']}"}, "sk": {"S": "STATUS"}, "status": {"S": "COMMITTED"},
              "payload_hash": {"S": parse_transaction(json.dumps(old)).payload_hash},
              "amount_minor": {"N": "500"}, "region": {"S": "us-east-1"}, "message_id": {"S": "m-old"}},
    )  # fmt: skip
    assert invoke(sqs_event([json.dumps(body)])) == {"batchItemFailures": []}
    status = status_of(region, body["transaction_id"])
    assert (status["amount_minor"]["N"], status["payload_hash"]["S"]) == (
        "700", parse_transaction(json.dumps(body)).payload_hash,
    )  # fmt: skip
    replaced = status["replaced"]["L"]
    assert [(r["M"]["amount_minor"]["N"], r["M"]["message_id"]["S"]) for r in replaced] == [("500", "m-old")]


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


# --- hostile input (issue 7) ------------------------------------------------------------------------------


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    """An SQS event as Lambda sends it, one record per body, with fresh message ids."""
    template = load_event("sqs_valid_batch.json")["Records"][0]
    return {"Records": [{**copy.deepcopy(template), "messageId": str(uuid.uuid4()), "body": b} for b in bodies]}


@pytest.fixture
def function_log(invoke: Any) -> Iterator[io.StringIO]:
    """What the handler logs during the test (Powertools binds its stream once, at the first import)."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger(FN).handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(buffer) for h in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        if stream is not None:
            handler.setStream(stream)


def logged(log: io.StringIO, message_id: str) -> list[dict[str, Any]]:
    """The handler's structured log lines about one message (correlation id = message id)."""
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("correlation_id") == message_id]


def journal_object(region: LocalRegion, message_ids: set[str]) -> list[dict[str, Any]]:
    """The journal lines of the one object that holds these messages."""
    journal = Journal(region.client("s3"), region.resources.bucket)
    for page in (
        region.client("s3").get_paginator("list_objects_v2").paginate(Bucket=region.resources.bucket, Prefix="archive/")
    ):
        for obj in page.get("Contents", []):
            lines = journal.read(obj["Key"])
            if message_ids & {line["message_id"] for line in lines}:
                return lines
    raise AssertionError(f"no journal object holds {sorted(message_ids)}")


def test_nine_valid_and_one_hostile_message_commit_nine_and_fail_one(
    region: LocalRegion, invoke: Any, function_log: io.StringIO
) -> None:
    tag = uuid.uuid4().hex[:8]
    bodies = [transfer(f"acc-{tag}-a", f"acc-{tag}-b") for _ in range(9)]
    hostile = transfer(f"acc-{tag}-a", f"acc-{tag}-b")
    hostile["transaction_id"] += "\n"  # passed the old `^...$` pattern, then failed the batch in PostgreSQL
    event = sqs_event([json.dumps(b) for b in [*bodies[:4], hostile, *bodies[4:]]])
    bad = event["Records"][4]["messageId"]

    assert invoke(event) == {"batchItemFailures": [{"itemIdentifier": bad}]}

    conn = ledger(region)
    rows = conn.run("SELECT message_id FROM ledger_transaction WHERE account_id = :a", a=f"acc-{tag}-a") or []
    assert sorted(r[0] for r in rows) == sorted(r["messageId"] for r in event["Records"] if r["messageId"] != bad)
    bal = dict(
        conn.run("SELECT account_id, balance_minor FROM account_balance WHERE account_id LIKE :p", p=f"acc-{tag}-%")
        or []
    )
    assert bal == {f"acc-{tag}-a": -900, f"acc-{tag}-b": 900}
    conn.close()
    rejected = [line for line in logged(function_log, bad) if line.get("message") == "message rejected"]
    assert rejected[0]["correlation_id"] == bad
    assert rejected[0]["reason"].startswith("invalid: transaction_id: contains a control or format character (U+000A")
    lines = journal_object(region, {r["messageId"] for r in event["Records"]})
    assert len(lines) == 9
    assert bad not in {line["message_id"] for line in lines}  # never journaled: reconciliation cannot replay it


def test_a_record_the_ledger_refuses_fails_alone_and_its_journal_line_is_marked(
    region: LocalRegion, invoke: Any, function_log: io.StringIO
) -> None:
    tag = uuid.uuid4().hex[:8]
    whale = f"acc-{tag}-whale"
    conn = ledger(region)  # migrated by the deploy's schema step
    conn.run("INSERT INTO account_balance VALUES (:a, 'USD', 9223372036854775000)", a=whale)
    bodies = [transfer(f"acc-{tag}-a", f"acc-{tag}-b") for _ in range(4)]
    refused = transfer(f"acc-{tag}-a", whale, amount="50.00")  # valid, but the balance would leave bigint
    event = sqs_event([json.dumps(b) for b in [*bodies[:2], refused, *bodies[2:]]])
    bad = event["Records"][2]["messageId"]

    assert invoke(event) == {"batchItemFailures": [{"itemIdentifier": bad}]}

    assert conn.run("SELECT count(*) FROM ledger_transaction WHERE account_id = :a", a=f"acc-{tag}-a") == [[4]]
    assert conn.run("SELECT balance_minor FROM account_balance WHERE account_id = :a", a=whale) == [
        [9223372036854775000]
    ]
    conn.close()
    rejected = [line for line in logged(function_log, bad) if line.get("message") == "message rejected"]
    assert rejected[0]["reason"] == "rejected_by_ledger: bigint out of range (SQLSTATE 22003)"
    assert rejected[0]["outcome"] == "rejected_by_ledger"
    status = region.client("dynamodb").get_item(
        TableName=region.resources.table, Key={"pk": {"S": f"TXN#{refused['transaction_id']}"}, "sk": {"S": "STATUS"}}
    )
    assert "Item" not in status  # nothing was applied, so nothing is recorded
    lines = journal_object(region, {bad})
    assert {line["message_id"]: line.get(REFUSED) for line in lines} == {
        r["messageId"]: ("bigint out of range (SQLSTATE 22003)" if r["messageId"] == bad else None)
        for r in event["Records"]
    }


def test_an_empty_batch_is_a_no_op(invoke: Any) -> None:
    assert invoke({"Records": []}) == {"batchItemFailures": []}


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda r: r.pop("messageId"), "not an SQS event: Records[1] has no messageId"),
        (lambda r: r.update(messageId=7), "not an SQS event: Records[1].messageId must be a non-empty string"),
        (lambda r: r.update(messageId=""), "not an SQS event: Records[1].messageId must be a non-empty string"),
        (lambda r: r.update(messageId="m\ud800"), "not an SQS event: Records[1].messageId holds a non-printable"),
        (lambda r: r.pop("body"), "not an SQS event: Records[1].body must be a string"),
        (lambda r: r.update(body={"amount": "1"}), "not an SQS event: Records[1].body must be a string"),
    ],
)
def test_a_malformed_record_is_the_invokers_error_in_one_line(invoke: Any, mangle: Any, message: str) -> None:
    event = load_event("sqs_valid_batch.json")
    mangle(event["Records"][1])
    with pytest.raises(ValueError, match=re.escape(message)):
        invoke(event)


def test_a_record_that_is_not_an_object_is_refused_clearly(invoke: Any) -> None:
    event = load_event("sqs_valid_batch.json")
    event["Records"][2] = "a string"
    with pytest.raises(ValueError, match=re.escape("not an SQS event: Records[2] is not an object")):
        invoke(event)


def test_a_fenced_processor_commits_nothing_and_returns_every_message_to_the_queue(
    region: LocalRegion, invoke: Any
) -> None:
    """Another region holds the control record: nothing reaches the journal, the ledger or the status table."""
    from tandem_core.control import ControlStore, NewExecution

    store = ControlStore(region.client("dynamodb"), region.resources.table, region.region)
    store.acquire(NewExecution("x-fence", "failover", "failover", "us-west-2"), now=1.0, lease_seconds=60)
    event = copy.deepcopy(load_event("sqs_valid_batch.json"))
    for record in event["Records"]:  # fresh transactions, so "nothing committed" is about this batch
        body = json.loads(record["body"])
        body["transaction_id"] = str(uuid.uuid4())
        record["body"] = json.dumps(body)
    archived_before = region.client("s3").list_objects_v2(Bucket=region.resources.bucket, Prefix="archive/")
    try:
        response = invoke(event)
    finally:
        region.client("dynamodb").delete_item(
            TableName=region.resources.table, Key={"pk": {"S": "CONTROL"}, "sk": {"S": "ACTIVE"}}
        )
    assert failures(response) == {r["messageId"] for r in event["Records"]}
    rows = ledger(region).run(
        "SELECT count(*) FROM ledger_transaction WHERE transaction_id = ANY(CAST(:i AS uuid[]))", i=ids(event)
    )
    assert rows == [[0]]
    for txn in ids(event):
        key = {"pk": {"S": f"TXN#{txn}"}, "sk": {"S": "STATUS"}}
        assert "Item" not in region.client("dynamodb").get_item(TableName=region.resources.table, Key=key)
    archived_after = region.client("s3").list_objects_v2(Bucket=region.resources.bucket, Prefix="archive/")
    assert archived_after.get("KeyCount") == archived_before.get("KeyCount")
