"""The transaction message contract and its parsing.

Money never passes through a float: bodies are decoded with ``parse_float=Decimal`` and the amount must be
a decimal *string*; the ledger stores integer minor units. Every way a body can be wrong ends in
:class:`InvalidMessage` with a reason an operator can act on.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from tandem_core.currencies import minor_unit

#: Largest amount in minor units we accept: keeps every balance well inside a signed 64-bit integer.
MAX_AMOUNT_MINOR = 10**15

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}$")
_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


class InvalidMessage(ValueError):
    """A message that can never be processed; the reason goes to the log and the DLQ path."""

    def __init__(self, reason: str) -> None:
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

    @field_validator("transaction_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if not _UUID.match(value):
            raise ValueError("must be a UUID in canonical 8-4-4-4-12 form")
        return value.lower()

    @field_validator("account_id", "counterparty_id")
    @classmethod
    def _account(cls, value: str) -> str:
        if not _ACCOUNT.match(value):
            raise ValueError("must be 1-64 characters: letters, digits and ._:@/- , starting alphanumeric")
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str) -> str:
        if not _AMOUNT.match(value):
            raise ValueError("must be a plain decimal string such as '125.50'")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("must be an uppercase ISO 4217 alphabetic code")
        if minor_unit(value) is None:
            raise ValueError(f"{value} is not an active ISO 4217 currency")
        return value

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, value: str) -> str:
        if not _RFC3339.match(value):
            raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-28T10:15:00Z")
        try:
            datetime.fromisoformat(value.upper().replace(" ", "T"))
        except ValueError as exc:
            raise ValueError(f"is not a valid date/time: {exc}") from None
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.account_id == self.counterparty_id:
            raise ValueError("account_id and counterparty_id must differ")
        digits = minor_unit(self.currency)
        assert digits is not None  # checked by the field validator
        fraction = self.amount.partition(".")[2]
        if len(fraction) > digits:
            raise ValueError(f"amount has {len(fraction)} fraction digits; {self.currency} allows {digits}")
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
        try:
            scaled = Decimal(self.amount).scaleb(digits)
        except InvalidOperation:  # pragma: no cover - excluded by the amount pattern
            raise ValueError("amount is not a decimal") from None
        return int(scaled)

    @property
    def created_at_utc(self) -> datetime:
        return datetime.fromisoformat(self.created_at.upper().replace(" ", "T")).astimezone(UTC)

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

    @property
    def payload_hash(self) -> str:
        """Identity of the transfer's content: a replay matches, a conflicting reuse of the id does not."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

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
            kind = "number" if isinstance(value, Decimal | int) else type(value).__name__
            raise InvalidMessage(f"{field}: must be a string, got a JSON {kind}")
    try:
        return Transaction.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
