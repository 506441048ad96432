"""The message contract: what producers may send and every way it can be wrong."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import UTC, datetime
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


def test_a_copy_with_other_values_has_their_hash_not_the_originals() -> None:
    original = parse_transaction(body())
    assert original.payload_hash  # computed, and cached on the instance
    changed = original.model_copy(update={"amount": "125.51"})
    assert changed.payload_hash == parse_transaction(body(amount="125.51")).payload_hash != original.payload_hash
    assert original.model_copy().payload_hash == original.payload_hash


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


# --- hostile input (issue 7): one bad message must never take valid ones down with it -----------------------

FIELDS = list(GOOD)
UUID_FORM = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PG_BIGINT_MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        # `$` matches before a trailing newline: these passed validation and then failed the whole batch
        ({"transaction_id": GOOD["transaction_id"] + "\n"}, "transaction_id"),
        ({"account_id": "acc-a\n"}, "account_id"),
        ({"counterparty_id": "acc-b\n"}, "counterparty_id"),
        ({"amount": "10\n"}, "amount"),
        # valid offsets that take the instant outside what a datetime holds once converted to UTC
        ({"created_at": "0001-01-01T00:00:00+23:59"}, "created_at"),
        ({"created_at": "9999-12-31T23:59:59-01:00"}, "created_at"),
        # more precision than any clock gives; the ledger keeps microseconds
        ({"created_at": "2026-11-28T10:15:00.1234567890Z"}, "created_at"),
        # leading zeros and runaway digit strings: one spelling per amount, bounded length
        ({"amount": "00012"}, "amount"),
        ({"amount": "0" * 100_000 + "1"}, "amount"),
        ({"amount": "1" * 100_000}, "amount"),
        ({"amount": "1." + "0" * 100_000}, "amount"),
    ],
)
def test_values_that_used_to_slip_through_are_invalid_messages(changes: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_transaction(body(**changes))
    assert field in err.value.reason
    assert err.value.reason.isprintable()  # one line for the log, whatever the input held


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "bad", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u200b", "\ufeff", "\u2028", "\ud800"]
)
def test_a_control_or_format_character_in_any_field_is_named_in_the_reason(field: str, bad: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_transaction(body(**{field: GOOD[field] + bad}))
    assert err.value.reason.startswith(f"{field}: ")
    assert f"U+{ord(bad):04X}" in err.value.reason
    assert err.value.reason.isprintable()


def test_the_smallest_and_largest_instants_still_parse() -> None:
    low = parse_transaction(body(created_at="0001-01-01T00:00:00Z"))
    high = parse_transaction(body(created_at="9999-12-31T23:59:59.999999Z"))
    assert low.created_at_utc.year == 1
    assert high.canonical()["created_at"] == "9999-12-31T23:59:59.999999Z"


def test_nanosecond_timestamps_are_kept_to_the_microsecond() -> None:
    t = parse_transaction(body(created_at="2026-11-28T10:15:00.123456789Z"))
    assert t.canonical()["created_at"] == "2026-11-28T10:15:00.123456Z"


def test_a_json_boolean_is_called_a_boolean() -> None:
    with pytest.raises(InvalidMessage, match="amount: must be a string, got a JSON boolean"):
        parse_transaction(body().replace('"125.50"', "true"))


WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u1680", "\u2000", "\u2028", "\u2029", "\u3000"]
INVISIBLE = ["\x00", "\x01", "\x1f", "\x7f", "\x80", "\x9f", "\u00ad", "\u200b", "\u200d", "\u2060", "\ufeff"]
UNICODE_DIGITS = ["\u0660", "\u06f0", "\u0966", "\uff10", "\U0001d7ce"]  # Arabic-Indic, Persian, Devanagari, ...
hostile_chars = st.one_of(
    st.sampled_from(WHITESPACE + INVISIBLE),
    st.characters(categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Zp"]),
)


@st.composite
def hostile_values(draw: st.DrawFn, field: str) -> str:
    """A valid value of ``field`` made invalid in one of the ways a hostile or broken producer would."""
    value = GOOD[field]
    how = draw(st.sampled_from(["append one", "append", "prepend", "insert", "unicode digit", "fullwidth", "too long"]))
    if how == "append one":
        return value + draw(st.sampled_from(["\n", "\r\n", " ", "\x00", "\u200b", "\ufeff"]))
    if how == "append":
        return value + draw(st.text(hostile_chars, min_size=1, max_size=3))
    if how == "prepend":
        return draw(st.text(hostile_chars, min_size=1, max_size=3)) + value
    if how == "insert":
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(hostile_chars) + value[at:]
    if how == "unicode digit":  # an ASCII character (a digit where there is one) becomes a non-ASCII digit
        at = draw(st.sampled_from([i for i, c in enumerate(value) if c.isdigit()] or [0]))
        offset = int(value[at]) if value[at].isdigit() else 0
        return value[:at] + chr(ord(draw(st.sampled_from(UNICODE_DIGITS))) + offset) + value[at + 1 :]
    if how == "fullwidth":  # every ASCII character replaced by its fullwidth form (U+FF01..U+FF5E)
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
    # too long for the column's rule
    if field == "created_at":
        return value[:-1] + "." + "1" * draw(st.integers(10, 500)) + "Z"
    if field == "amount":
        return "1" * draw(st.integers(17, 500))
    return value + {"transaction_id": "0", "currency": "D"}.get(field, "a" * 64)


@settings(max_examples=100, deadline=None)
@pytest.mark.parametrize("field", FIELDS)
@given(data=st.data())
def test_hostile_strings_in_any_field_raise_invalid_message_and_nothing_else(field: str, data: st.DataObject) -> None:
    value = data.draw(hostile_values(field))
    with pytest.raises(InvalidMessage) as err:
        parse_transaction(json.dumps({**GOOD, field: value}))
    assert field in err.value.reason
    assert err.value.reason.isprintable()


def assert_the_ledger_accepts(t: Transaction) -> None:
    """What PostgreSQL accepts for every column the ledger writes (see migrations/0001_ledger.sql)."""
    assert re.fullmatch(UUID_FORM, t.transaction_id)
    for account in (t.account_id, t.counterparty_id):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}", account)
    assert t.account_id != t.counterparty_id
    assert type(t.amount_minor) is int
    assert 1 <= t.amount_minor <= MAX_AMOUNT_MINOR <= PG_BIGINT_MAX
    assert t.currency in MINOR_UNITS
    assert re.fullmatch(r"[A-Z]{3}", t.currency)
    instant = t.created_at_utc
    assert instant.tzinfo is UTC
    assert 1 <= instant.year <= 9999
    assert re.fullmatch(r"[0-9a-f]{64}", t.payload_hash)
    for value in t.model_dump().values():  # every string encodes to UTF-8 and holds no control character
        value.encode("utf-8")
        assert not [c for c in value if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]
    assert parse_transaction(json.dumps(t.as_message())).payload_hash == t.payload_hash


near_valid = {
    "transaction_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=40)),
    "account_id": st.one_of(accounts, st.text(max_size=70)),
    "counterparty_id": st.one_of(accounts, st.text(max_size=70)),
    "amount": st.one_of(st.from_regex(r"\A[0-9]{1,18}(\.[0-9]{0,5})?\Z"), st.text(max_size=25)),
    "currency": st.one_of(currencies, st.text(max_size=4)),
    "created_at": st.one_of(
        st.from_regex(
            r"\A[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\.[0-9]{1,12})?"
            r"([Zz]|[+-][0-2][0-9]:[0-5][0-9])\Z"
        ),
        st.text(max_size=40),
    ),
}


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries(near_valid))
def test_whatever_parses_is_something_the_ledger_accepts(msg: dict[str, str]) -> None:
    try:
        t = parse_transaction(json.dumps(msg))
    except InvalidMessage as exc:
        assert exc.reason.isprintable()
    else:
        assert_the_ledger_accepts(t)


@settings(max_examples=300, deadline=None)
@given(valid_messages())
def test_every_valid_message_is_something_the_ledger_accepts(msg: dict[str, str]) -> None:
    assert_the_ledger_accepts(parse_transaction(json.dumps(msg)))


any_text = st.text(st.characters(exclude_categories=[]), max_size=60)  # includes lone surrogates


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), any_text), any_text, max_size=8),
    st.booleans(),
)
def test_json_objects_of_arbitrary_strings_raise_invalid_message_or_parse(data: dict[str, str], raw: bool) -> None:
    text = json.dumps(data, ensure_ascii=not raw)
    try:
        t = parse_transaction(text)
    except InvalidMessage as exc:
        assert exc.reason.isprintable()
    else:
        assert_the_ledger_accepts(t)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=[]), max_size=300))
def test_arbitrary_text_including_surrogates_raises_only_invalid_message(raw: str) -> None:
    try:
        parse_transaction(raw)
    except InvalidMessage as exc:
        assert exc.reason.isprintable()


@given(valid_messages(), st.datetimes(timezones=st.just(UTC)))
def test_identity_ignores_created_at_and_a_ledger_row_reads_back_as_the_same_payload(
    msg: dict[str, str], restamped: datetime
) -> None:
    """A retry may re-stamp ``created_at`` and stays the same transfer; what the ledger stores (minor units,
    the instant in UTC) rebuilds the exact payload the message had, so the status can follow the ledger."""
    t = parse_transaction(json.dumps(msg))
    retry = t.model_copy(update={"created_at": restamped.isoformat()})
    assert retry.identity_hash == t.identity_hash
    row = Transaction.from_ledger(t.transaction_id, t.account_id, t.counterparty_id, t.amount_minor, t.currency,
                                  t.created_at_utc)  # fmt: skip
    assert (row.payload_hash, row.identity) == (t.payload_hash, t.identity)
    amount = t.amount_minor % 7 + 1
    more = Transaction.from_ledger(t.transaction_id, t.account_id, t.counterparty_id, amount, t.currency,
                                   t.created_at_utc)  # fmt: skip
    assert (more.identity_hash != t.identity_hash) == (amount != t.amount_minor)  # another amount: a conflict
