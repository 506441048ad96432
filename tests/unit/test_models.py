"""The message contract: what producers may send and every way it can be wrong."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem_core.currencies import MINOR_UNITS
from tandem_core.models import MAX_AMOUNT_MINOR, InvalidMessage, Transaction, parse_transaction
from tests.conftest import load_event

GOOD = {
    "transaction_id": "8d1e4c6a-2f0b-4c3e-9a57-0b6f6f1e2a10",
    "account_id": "acc-1001",
    "counterparty_id": "acc-2002",
    "amount": "125.50",
    "currency": "USD",
    "created_at": "2026-11-28T10:15:00Z",
}


def body(**changes: Any) -> str:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_the_readme_example_parses_to_minor_units() -> None:
    t = parse_transaction(body())
    assert t.amount_minor == 12550
    assert t.canonical()["created_at"] == "2026-11-28T10:15:00Z"


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [
        ("USD", "0.01", 1),
        ("JPY", "9800", 9800),
        ("BHD", "12.345", 12345),
        ("EUR", "7", 700),
        ("CLF", "1.0001", 10001),
    ],
)
def test_fraction_digits_follow_the_currency(currency: str, amount: str, minor: int) -> None:
    assert parse_transaction(body(currency=currency, amount=amount)).amount_minor == minor


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": "10.001"}, "USD allows 2"),
        ({"amount": "1.5", "currency": "JPY"}, "JPY allows 0"),
        ({"amount": "0.00"}, "greater than zero"),
        ({"amount": "-5"}, "plain decimal string"),
        ({"amount": "1e3"}, "plain decimal string"),
        ({"amount": " 5"}, "plain decimal string"),
        ({"amount": str(MAX_AMOUNT_MINOR)}, "exceeds the limit"),
        ({"currency": "usd"}, "uppercase ISO 4217"),
        ({"currency": "XYZ"}, "not an active ISO 4217"),
        ({"currency": "XAU"}, "not an active ISO 4217"),
        ({"counterparty_id": "acc-1001"}, "must differ"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": " acc-1"}, "account_id"),
        ({"transaction_id": "8d1e4c6a2f0b4c3e9a570b6f6f1e2a10"}, "UUID"),
        ({"transaction_id": "{8d1e4c6a-2f0b-4c3e-9a57-0b6f6f1e2a10}"}, "UUID"),
        ({"created_at": "2026-11-28T10:15:00"}, "offset"),
        ({"created_at": "2026-11-28"}, "RFC 3339"),
        ({"created_at": "2026-02-30T10:15:00Z"}, "not a valid date"),
        ({"currency": None}, "currency: Field required"),
    ],
)
def test_invalid_fields_are_rejected_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_transaction(body(**changes))
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"a string"', "JSON object"),
        ("null", "JSON object"),
        ("", "not valid JSON"),
        ('{"amount": NaN}', "not valid JSON"),
        (body().replace('"125.50"', "125.50"), "amount: must be a string, got a JSON number"),
        (body().replace('"USD"', "840"), "currency: must be a string"),
    ],
)
def test_bodies_that_are_not_a_contract_object(raw: str, reason: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_transaction(raw)
    assert reason in err.value.reason


def test_unknown_fields_are_ignored_and_do_not_change_identity() -> None:
    plain = parse_transaction(body())
    extra = parse_transaction(body(channel="mobile", note={"x": 1}))
    assert extra == plain
    assert extra.payload_hash == plain.payload_hash


def test_same_money_and_instant_in_another_spelling_is_the_same_payload() -> None:
    a = parse_transaction(body())
    b = parse_transaction(body(amount="125.5", created_at="2026-11-28T11:15:00+01:00"))
    assert a.payload_hash == b.payload_hash
    assert parse_transaction(body(amount="125.51")).payload_hash != a.payload_hash


def test_uuid_is_normalised_to_lower_case() -> None:
    t = parse_transaction(body(transaction_id=GOOD["transaction_id"].upper()))
    assert t.transaction_id == GOOD["transaction_id"]


def test_every_record_of_the_sample_events_either_parses_or_has_a_reason() -> None:
    for name in ("sqs_valid_batch.json", "sqs_invalid_records.json", "sqs_duplicates_and_conflict.json"):
        for record in load_event(name)["Records"]:
            try:
                parse_transaction(record["body"])
            except InvalidMessage as exc:
                assert exc.reason


currencies = st.sampled_from(sorted(MINOR_UNITS))
accounts = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/-]{0,20}\Z")


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, str]:
    currency = draw(currencies)
    digits = MINOR_UNITS[currency]
    minor = draw(st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR))
    amount = str(Decimal(minor).scaleb(-digits)) if digits else str(minor)
    a, b = draw(st.lists(accounts, min_size=2, max_size=2, unique=True))
    offset = draw(st.sampled_from(["Z", "+00:00", "-05:00", "+05:45", "+14:00"]))
    stamp = draw(st.datetimes(min_value=datetime(1970, 1, 2))).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "transaction_id": str(draw(st.uuids())),
        "account_id": a,
        "counterparty_id": b,
        "amount": amount,
        "currency": currency,
        "created_at": stamp + offset,
    }


@settings(max_examples=300, deadline=None)
@given(valid_messages())
def test_any_valid_message_parses_exactly(msg: dict[str, str]) -> None:
    t = parse_transaction(json.dumps(msg))
    assert Decimal(msg["amount"]).scaleb(MINOR_UNITS[msg["currency"]]) == t.amount_minor
    assert t.transaction_id == str(uuid.UUID(msg["transaction_id"]))
    assert parse_transaction(json.dumps(t.as_message())).payload_hash == t.payload_hash


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_arbitrary_bodies_either_parse_or_raise_invalid_message(raw: str) -> None:
    try:
        t = parse_transaction(raw)
    except InvalidMessage as exc:
        assert exc.reason
    else:
        assert isinstance(t, Transaction)


@settings(max_examples=200, deadline=None)
@given(valid_messages(), st.sampled_from(list(GOOD)), json_values)
def test_a_field_of_the_wrong_json_type_is_always_rejected(msg: dict[str, Any], field: str, value: Any) -> None:
    if isinstance(value, str):
        return
    with pytest.raises(InvalidMessage):
        parse_transaction(json.dumps({**msg, field: value}))
