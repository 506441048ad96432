"""The transaction message contract and its parsing.

Money never passes through a float: bodies are decoded with ``parse_float=Decimal`` and the amount must be
a decimal *string*; the ledger stores integer minor units. Every way a body can be wrong ends in
:class:`InvalidMessage` with a reason an operator can act on.

Validation means what it says, because a value that passes here and is refused by PostgreSQL later costs far
more (the ledger must isolate it): patterns are matched in full (``re.fullmatch``; ``$`` would accept a
trailing newline), no field may hold a control, format or line-break character, and every value the ledger
stores is checked against what the database accepts - ASCII-only grammars, bounded lengths, an amount inside
a bigint, an instant that converts to UTC within the years 1-9999.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from tandem_core.currencies import minor_unit
from tandem_core.validation import describe

#: Largest amount in minor units we accept: keeps every balance well inside a signed 64-bit integer.
MAX_AMOUNT_MINOR = 10**15

#: Digits of the integer part of the largest amount (10**15 minor units of a currency without minor unit).
_MAX_INTEGER_DIGITS = len(str(MAX_AMOUNT_MINOR))
#: Fraction digits of a second we accept (nanoseconds, what producers' clocks print); the ledger keeps microseconds.
_MAX_SECOND_DIGITS = 9

# Every pattern is used with fullmatch and spells its characters out: `$` matches before a trailing newline
# and `\d` matches any Unicode digit, and either lets through a value PostgreSQL refuses.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}")
_AMOUNT = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
#: Unicode categories no field may hold: controls (NUL, newline, ...), format characters (zero-width space,
#: BOM, bidi marks), lone surrogates (not encodable as UTF-8) and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _forbidden_character(value: str) -> str | None:
    """Describe the first control/format/surrogate/line-break character in ``value``, or None."""
    if value.isascii() and value.isprintable():  # the common case, at C speed
        return None
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            name = unicodedata.name(char, "") or {"Cc": "control", "Cs": "lone surrogate"}.get(category, category)
            return f"U+{ord(char):04X} {name} at position {index}"
    return None


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped, so a reason is always one clean log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


class InvalidMessage(ValueError):
    """A message that can never be processed; the reason goes to the log and the DLQ path."""

    def __init__(self, reason: str) -> None:
        reason = one_line(reason)
        super().__init__(reason)
        self.reason = reason


class Transaction(BaseModel):
    """A validated transfer: debit ``account_id``, credit ``counterparty_id``."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    transaction_id: str
    account_id: str
    counterparty_id: str
    amount: str
    currency: str
    created_at: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """One rule for every field, checked first, so the reason names the character and not a pattern."""
        if isinstance(value, str) and (found := _forbidden_character(value)):
            raise ValueError(f"contains a control or format character ({found})")
        return value

    @field_validator("transaction_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if not _UUID.fullmatch(value):
            raise ValueError("must be a UUID in canonical 8-4-4-4-12 form")
        return value.lower()

    @field_validator("account_id", "counterparty_id")
    @classmethod
    def _account(cls, value: str) -> str:
        if not _ACCOUNT.fullmatch(value):
            raise ValueError("must be 1-64 characters: letters, digits and ._:@/- , starting alphanumeric")
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str) -> str:
        if not _AMOUNT.fullmatch(value):
            raise ValueError("must be a plain decimal string without leading zeros, such as '125.50'")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not _CURRENCY.fullmatch(value):
            raise ValueError("must be an uppercase ISO 4217 alphabetic code")
        if minor_unit(value) is None:
            raise ValueError(f"{value} is not an active ISO 4217 currency")
        return value

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, value: str) -> str:
        match = _RFC3339.fullmatch(value)
        if not match:
            raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-28T10:15:00Z")
        if len(match.group(1) or "") > _MAX_SECOND_DIGITS:
            raise ValueError(f"has more than {_MAX_SECOND_DIGITS} fraction digits of a second")
        try:
            _to_utc(value)
        except ValueError as exc:
            raise ValueError(f"is not a valid date/time: {exc}") from None
        except OverflowError:
            raise ValueError("is outside the years 1-9999 once converted to UTC") from None
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.account_id == self.counterparty_id:
            raise ValueError("account_id and counterparty_id must differ")
        digits = minor_unit(self.currency)
        assert digits is not None  # checked by the field validator
        integer, _, fraction = self.amount.partition(".")
        if len(fraction) > digits:
            raise ValueError(f"amount has {len(fraction)} fraction digits; {self.currency} allows {digits}")
        if len(integer) > _MAX_INTEGER_DIGITS:  # no digit string of any length reaches int() below
            raise ValueError(f"amount exceeds the limit of {MAX_AMOUNT_MINOR} minor units")
        minor = self.amount_minor
        if minor <= 0:
            raise ValueError("amount must be greater than zero")
        if minor > MAX_AMOUNT_MINOR:
            raise ValueError(f"amount exceeds the limit of {MAX_AMOUNT_MINOR} minor units")
        return self

    @property
    def amount_minor(self) -> int:
        """The amount in integer minor units of the currency (125.50 USD -> 12550)."""
        digits = minor_unit(self.currency) or 0
        integer, _, fraction = self.amount.partition(".")  # ASCII digits only (the amount pattern)
        scale: int = 10**digits
        return int(integer) * scale + int(fraction.ljust(digits, "0") or "0")

    @property
    def created_at_utc(self) -> datetime:
        """The instant in UTC, to the microsecond (the ledger's precision; further digits are dropped)."""
        return _to_utc(self.created_at)

    def canonical(self) -> dict[str, Any]:
        """The fields that define the transfer, normalised (minor units, UTC), for hashing and the journal."""
        return {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "counterparty_id": self.counterparty_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "created_at": self.created_at_utc.isoformat().replace("+00:00", "Z"),
        }

    @functools.cached_property
    def payload_hash(self) -> str:
        """The hash of everything the message said, ``created_at`` included: recorded with the ledger row, the
        status item and the journal line. Whether two messages are the same transfer is :attr:`identity`.

        Cached: the ledger and the status write each need it (sha256 over canonical JSON, per item)."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def identity(self) -> tuple[str, str, str, int, str]:
        """Which transfer this is: id, accounts, amount, currency. Not ``created_at``: a producer's retry may
        re-stamp it (it says when the request was made, not what moves), so a retry is the same transfer and
        a different amount or account under the same id is a conflict."""
        return (self.transaction_id, self.account_id, self.counterparty_id, self.amount_minor, self.currency)

    @functools.cached_property
    def identity_hash(self) -> str:
        blob = json.dumps(list(self.identity), separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_ledger(
        cls,
        transaction_id: str,
        account_id: str,
        counterparty_id: str,
        amount_minor: int,
        currency: str,
        created_at: datetime,
    ) -> Transaction:
        """The transfer a ledger row holds (amounts back from minor units, the instant in UTC)."""
        digits = minor_unit(currency) or 0
        whole, fraction = divmod(amount_minor, 10**digits)
        amount = f"{whole}.{fraction:0{digits}d}" if digits else str(whole)
        at = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return cls(transaction_id=transaction_id, account_id=account_id, counterparty_id=counterparty_id,
                   amount=amount, currency=currency.strip(), created_at=at)  # fmt: skip

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Pydantic copies the instance's ``__dict__``, cached hash included: a copy with other values must not
        keep the original's identity."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("payload_hash", None)
        copy.__dict__.pop("identity_hash", None)
        return copy

    def as_message(self) -> dict[str, str]:
        """The transfer in the producer contract's shape (what reconciliation re-sends)."""
        return {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "counterparty_id": self.counterparty_id,
            "amount": self.amount,
            "currency": self.currency,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Entry:
    """A transaction and the id of the message that carried it: what the ledger, journal and status store record."""

    transaction: Transaction
    message_id: str


def _to_utc(value: str) -> datetime:
    """Raises ValueError for a date/time that does not exist, OverflowError for one outside years 1-9999 UTC."""
    # fromisoformat keeps 6 fraction digits and drops the rest (documented since Python 3.11)
    return datetime.fromisoformat(value.upper().replace(" ", "T")).astimezone(UTC)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_transaction(body: str) -> Transaction:
    """Parse a message body into a Transaction or raise InvalidMessage with the first problem found."""
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"body must be a JSON object, got {type(data).__name__}")
    for field, value in data.items():
        if field in Transaction.model_fields and not isinstance(value, str):
            kind = {bool: "boolean", int: "number", Decimal: "number", dict: "object", list: "array"}.get(
                type(value), type(value).__name__
            )
            raise InvalidMessage(f"{field}: must be a string, got a JSON {kind}")
    try:
        return Transaction.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(describe(exc, "body")) from None
