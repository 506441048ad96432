"""Status items and the journal, against moto in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tandem.local import ledger_table_keys
from tandem_core.archive import REFUSED, Journal, journal_key
from tandem_core.models import Entry, parse_transaction
from tandem_core.status import StatusStore, StatusWrite
from tests.conftest import load_event

NOW = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)


def entries(name: str) -> list[Entry]:
    out = []
    for record in load_event(name)["Records"]:
        out.append(Entry(parse_transaction(record["body"]), record["messageId"]))
    return out


@pytest.fixture
def aws(aws_env: None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="ledger", BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="archive")
        yield {"dynamodb": ddb, "s3": s3}


def test_status_is_written_once_per_transaction_and_replays_are_idempotent(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    writes = [StatusWrite(e, "COMMITTED", "us-east-1", NOW, first=True) for e in entries("sqs_valid_batch.json")]
    store.record(writes)
    store.record(writes)  # a redelivery after a crash between the status write and the message's deletion
    store.record([replace(w, first=False) for w in writes])  # and again, once the ledger called it a duplicate
    items = aws["dynamodb"].scan(TableName="ledger")["Items"]
    assert len(items) == 4
    first = store.get(writes[0].entry.transaction.transaction_id)
    assert first is not None
    assert first["amount_minor"] == {"N": "12550"}
    assert first["status"] == {"S": "COMMITTED"}


def test_the_ledgers_truth_replaces_an_item_of_another_transfer_and_keeps_what_it_said(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    dup = entries("sqs_duplicates_and_conflict.json")  # [3] is [0]'s id with another amount
    store.record([StatusWrite(dup[0], "COMMITTED", "us-east-1", NOW)])
    replaced = store.record([StatusWrite(dup[3], "COMMITTED", "us-west-2", NOW, first=True),
                             StatusWrite(dup[4], "COMMITTED", "x", NOW)])  # fmt: skip
    assert replaced == [dup[3].transaction.transaction_id]
    assert store.get(dup[4].transaction.transaction_id) is not None  # the other write landed too
    item = store.get(dup[0].transaction.transaction_id)
    assert item is not None
    assert (item["payload_hash"], item["region"], item["message_id"]) == (
        {"S": dup[3].transaction.payload_hash}, {"S": "us-west-2"}, {"S": dup[3].message_id},
    )  # fmt: skip
    [was] = item["replaced"]["L"]
    assert (was["M"]["payload_hash"], was["M"]["amount_minor"]) == (
        {"S": dup[0].transaction.payload_hash}, {"N": str(dup[0].transaction.amount_minor)},
    )  # fmt: skip


def test_a_restamped_created_at_is_the_same_transfer_for_the_status(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    [first, *_] = entries("sqs_valid_batch.json")
    store.record([StatusWrite(first, "COMMITTED", "us-east-1", NOW, first=True)])
    restamped = Entry(first.transaction.model_copy(update={"created_at": "2026-11-28T10:20:00Z"}), "retry")
    assert store.record([StatusWrite(restamped, "COMMITTED", "us-west-2", NOW, first=True)]) == []
    item = store.get(first.transaction.transaction_id)
    assert item is not None
    assert "replaced" not in item


def count_calls(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    return calls


def test_a_batch_costs_one_call_and_a_replay_elsewhere_keeps_the_first_region_time_and_message(
    aws: dict[str, Any],
) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    calls = count_calls(aws["dynamodb"])
    first = entries("sqs_valid_batch.json")
    store.record([StatusWrite(e, "COMMITTED", "us-east-1", NOW, first=True) for e in first])
    assert calls == ["TransactWriteItems"]
    later = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    # redelivered in DR, later: the processor passes what the ledger holds (the first message's row)
    store.record([StatusWrite(e, "COMMITTED", "us-west-2", later) for e in first])
    item = store.get(first[0].transaction.transaction_id)
    assert item is not None
    assert (item["region"], item["recorded_at"], item["message_id"]) == (
        {"S": "us-east-1"}, {"S": NOW.isoformat()}, {"S": first[0].message_id},
    )  # fmt: skip


def test_a_clash_costs_a_second_call_for_the_others_and_a_read_and_write_for_itself(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    dup = entries("sqs_duplicates_and_conflict.json")
    store.record([StatusWrite(dup[0], "COMMITTED", "us-east-1", NOW)])
    calls = count_calls(aws["dynamodb"])
    store.record([StatusWrite(dup[3], "COMMITTED", "us-east-1", NOW), StatusWrite(dup[4], "COMMITTED", "x", NOW)])
    assert calls == ["TransactWriteItems", "TransactWriteItems", "GetItem", "UpdateItem"]


def test_more_writes_than_one_transaction_holds_go_in_chunks_of_100(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "ledger")
    template = entries("sqs_valid_batch.json")[0]
    many = []
    for i in range(150):
        txn = parse_transaction(json.dumps({**json.loads(template.transaction.model_dump_json()),
                                            "transaction_id": f"00000000-0000-4000-8000-{i:012d}"}))  # fmt: skip
        many.append(StatusWrite(Entry(txn, f"m-{i}"), "COMMITTED", "us-east-1", NOW))
    calls = count_calls(aws["dynamodb"])
    store.record(many)
    assert calls == ["TransactWriteItems", "TransactWriteItems"]
    assert aws["dynamodb"].scan(TableName="ledger", Select="COUNT")["Count"] == 150


def test_other_dynamodb_errors_propagate(aws: dict[str, Any]) -> None:
    store = StatusStore(aws["dynamodb"], "no-such-table")
    with pytest.raises(Exception, match=r"ResourceNotFound|not found"):
        store.record([StatusWrite(entries("sqs_valid_batch.json")[0], "COMMITTED", "r", NOW)])


def test_journal_keeps_the_batch_as_json_lines_under_date_and_hour(aws: dict[str, Any]) -> None:
    journal = Journal(aws["s3"], "archive")
    batch = entries("sqs_valid_batch.json")
    key = journal.append(batch, "us-east-1", NOW)
    assert key is not None
    assert key.startswith("archive/2026/11/28/10/us-east-1-")
    assert key.endswith(".jsonl")
    lines = journal.read(key)
    assert [line["message_id"] for line in lines] == [e.message_id for e in batch]
    replayed = parse_transaction(json.dumps(lines[0]["transaction"]))
    assert replayed.payload_hash == batch[0].transaction.payload_hash == lines[0]["payload_hash"]


def test_a_retried_batch_overwrites_its_own_journal_object(aws: dict[str, Any]) -> None:
    batch = entries("sqs_valid_batch.json")
    assert journal_key(batch, NOW, "us-east-1") == journal_key(list(reversed(batch)), NOW, "us-east-1")
    assert journal_key(batch, NOW, "us-east-1") != journal_key(batch[:2], NOW, "us-east-1")
    assert journal_key(batch, NOW, "us-east-1") != journal_key(batch, NOW, "us-west-2")  # a replay elsewhere
    journal = Journal(aws["s3"], "archive")
    journal.append(batch, "us-east-1", NOW)
    journal.append(batch, "us-east-1", NOW)
    assert aws["s3"].list_objects_v2(Bucket="archive")["KeyCount"] == 1


def test_an_empty_batch_writes_nothing(aws: dict[str, Any]) -> None:
    assert Journal(aws["s3"], "archive").append([], "us-east-1", NOW) is None
    assert aws["s3"].list_objects_v2(Bucket="archive")["KeyCount"] == 0


def test_lines_the_ledger_refused_are_marked_in_place_and_not_replayable(aws: dict[str, Any]) -> None:
    journal = Journal(aws["s3"], "archive")
    batch = entries("sqs_valid_batch.json")
    key = journal.append(batch, "us-east-1", NOW)
    assert key is not None
    assert journal.replayable(key) == journal.read(key)  # nothing refused yet: every line replays
    refused = {batch[1].message_id: "bigint out of range (SQLSTATE 22003)"}
    journal.mark_refused(key, batch, "us-east-1", refused)
    assert aws["s3"].list_objects_v2(Bucket="archive")["KeyCount"] == 1  # the same object, rewritten
    lines = journal.read(key)
    assert [line["message_id"] for line in lines] == [e.message_id for e in batch]
    assert lines[1][REFUSED] == "bigint out of range (SQLSTATE 22003)"
    assert [REFUSED in line for line in lines] == [False, True, False, False]
    assert [line["message_id"] for line in journal.replayable(key)] == [
        e.message_id for e in batch if e.message_id not in refused
    ]
    assert set(lines[0]) == {"message_id", "region", "payload_hash", "transaction"}  # other lines unchanged
