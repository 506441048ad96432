"""Seeded drill workloads: valid transfers, poison messages of every kind, and redeliveries.

Amounts and currencies mean what the message contract says they mean (:mod:`tandem_core.models`,
:mod:`tandem_core.currencies`): the workload never keeps a second table of minor units that could disagree.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tandem_core.currencies import minor_unit
from tandem_core.models import Transaction, parse_transaction

#: Currencies the workload draws from, with their weights: 2, 0 and 3 minor digits all appear.
CURRENCIES = (("USD", 40), ("EUR", 25), ("GBP", 10), ("JPY", 15), ("BHD", 10))


@dataclass
class Workload:
    valid: dict[str, str] = field(default_factory=dict)  # transaction id -> body
    poison: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # bodies re-sent verbatim

    def messages(self, rng: random.Random) -> list[str]:
        """Every body to send, shuffled; a duplicate may arrive before or after its original."""
        bodies = [*self.valid.values(), *self.poison, *self.duplicates]
        rng.shuffle(bodies)
        return bodies

    def transfers(self) -> dict[str, Transaction]:
        """The valid transfers as the contract parses them (minor units, normalised ids), by transaction id."""
        return {tid: parse_transaction(body) for tid, body in self.valid.items()}

    def expected_balances(self) -> dict[tuple[str, str], int]:
        """Balance changes, per (account, currency), if every valid transfer is applied exactly once."""
        out: dict[tuple[str, str], int] = {}
        for t in self.transfers().values():
            debit, credit = (t.account_id, t.currency), (t.counterparty_id, t.currency)
            out[debit] = out.get(debit, 0) - t.amount_minor
            out[credit] = out.get(credit, 0) + t.amount_minor
        return out


def _amount(rng: random.Random, digits: int) -> str:
    minor = rng.randint(1, 5_000_000)
    if digits == 0:
        return str(minor)
    return f"{minor // 10**digits}.{minor % 10**digits:0{digits}d}"


def _valid(rng: random.Random, accounts: list[str], at: datetime, salt: int = 0) -> dict[str, str]:
    code, _ = rng.choices(CURRENCIES, weights=[w for _, w in CURRENCIES])[0]
    digits = minor_unit(code)
    assert digits is not None, f"{code} is not a currency the contract knows"
    a, b = rng.sample(accounts, 2)
    offset = rng.choice(["Z", "+00:00", "+09:00", "-05:00", "+05:30"])
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if offset == "Z" else "+00:00")
    if offset not in {"Z", "+00:00"}:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
        stamp = (at + delta).strftime("%Y-%m-%dT%H:%M:%S") + offset
    return {
        "transaction_id": str(uuid.UUID(int=rng.getrandbits(128) ^ salt, version=4)),
        "account_id": a,
        "counterparty_id": b,
        "amount": _amount(rng, digits),
        "currency": code,
        "created_at": stamp,
    }


def _poison(rng: random.Random, accounts: list[str], at: datetime, kind: int, salt: int) -> str:
    t = _valid(rng, accounts, at, salt)
    match kind % 10:
        case 0:
            return "not json at all"
        case 1:
            return json.dumps([t])  # an array, not an object
        case 2:
            return json.dumps({**t, "amount": "12.345", "currency": "USD"})  # too many fraction digits
        case 3:
            return json.dumps({**t, "currency": "ABC"})  # not an ISO 4217 code
        case 4:
            return json.dumps({**t, "counterparty_id": t["account_id"]})  # transfer to itself
        case 5:
            return json.dumps({**t, "transaction_id": "txn-" + t["transaction_id"][:8]})  # not a UUID
        case 6:
            return json.dumps({**t, "created_at": t["created_at"][:19]})  # no offset
        case 7:
            return json.dumps({**t, "amount": "0"})  # not > 0
        case 8:
            return json.dumps({k: v for k, v in t.items() if k != "currency"})  # missing field
        case _:
            return json.dumps(t).replace(f'"{t["amount"]}"', "12.5")  # a JSON number (float) amount


def generate(transactions: int, poison: int, duplicates: int, seed: int, accounts: int = 40, salt: int = 0) -> Workload:
    """The seed fixes the workload; ``salt`` (mixed into every transaction id) keeps two runs of one seed apart."""
    if transactions < 0 or poison < 0 or duplicates < 0:
        raise ValueError("transactions, poison and duplicates must be >= 0")
    if duplicates and not transactions:
        raise ValueError("duplicates need at least one valid transaction to redeliver")
    rng = random.Random(seed)
    names = [f"acc-{i:04d}" for i in range(1, max(accounts, 2) + 1)]
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    wl = Workload()
    while len(wl.valid) < transactions:
        t = _valid(rng, names, start + timedelta(seconds=len(wl.valid)), salt)
        wl.valid[t["transaction_id"]] = json.dumps(t)
    wl.poison = [_poison(rng, names, start, i, salt) for i in range(poison)]
    originals = list(wl.valid.values())
    wl.duplicates = [rng.choice(originals) for _ in range(duplicates)]
    return wl
