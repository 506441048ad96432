"""The ledger in PostgreSQL: exactly-once application of transfers, one round trip per batch.

One statement (autocommit, so it is its own transaction) inserts the new transaction rows with
``ON CONFLICT DO NOTHING`` and applies the balance effect of exactly the rows it inserted, then reports,
per transaction, whether it was new, an identical replay, or a conflicting reuse of the id. A replay is a
no-op because nothing is inserted for it; a crash before commit applies nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import pg8000.native

from tandem_core.database import CONNECTION_ERRORS, LedgerConnector
from tandem_core.database import sqlstate as _sqlstate
from tandem_core.models import Transaction
from tandem_core.schema import SqlRunner, migrate


class Outcome(enum.StrEnum):
    COMMITTED = "committed"  # applied now
    DUPLICATE = "duplicate"  # applied before with the same content: success, nothing changed
    CONFLICT = "conflict"  # the id was applied before with different content: the first stays


@dataclass(frozen=True)
class Entry:
    transaction: Transaction
    message_id: str


_APPLY = """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:accounts AS text[]), CAST(:counterparties AS text[]),
        CAST(:amounts AS bigint[]), CAST(:currencies AS text[]), CAST(:created AS timestamptz[]),
        CAST(:hashes AS text[]), CAST(:messages AS text[])
    ) AS t(transaction_id, account_id, counterparty_id, amount_minor, currency, created_at, payload_hash,
           message_id)
),
inserted AS (
    INSERT INTO ledger_transaction
        (transaction_id, account_id, counterparty_id, amount_minor, currency, created_at, payload_hash,
         message_id)
    SELECT transaction_id, account_id, counterparty_id, amount_minor, currency, created_at, payload_hash,
           message_id
    FROM input ORDER BY transaction_id
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING transaction_id, account_id, counterparty_id, amount_minor, currency
),
legs AS (
    SELECT account_id, currency, -amount_minor AS delta FROM inserted
    UNION ALL
    SELECT counterparty_id, currency, amount_minor FROM inserted
),
balances AS (
    INSERT INTO account_balance AS b (account_id, currency, balance_minor)
    SELECT account_id, currency, sum(delta) FROM legs GROUP BY account_id, currency
    ORDER BY account_id, currency
    ON CONFLICT (account_id, currency) DO UPDATE SET balance_minor = b.balance_minor + EXCLUDED.balance_minor
    RETURNING 1
)
SELECT CAST(i.transaction_id AS text), n.transaction_id IS NOT NULL, CAST(e.payload_hash AS text),
       (SELECT count(*) FROM balances)
FROM input i
LEFT JOIN inserted n ON n.transaction_id = i.transaction_id
LEFT JOIN ledger_transaction e ON e.transaction_id = i.transaction_id
"""

_EXISTING = (
    "SELECT CAST(transaction_id AS text), CAST(payload_hash AS text) FROM ledger_transaction"
    " WHERE transaction_id = ANY(CAST(:ids AS uuid[]))"
)


def apply_batch(db: SqlRunner, entries: Sequence[Entry]) -> dict[str, Outcome]:
    """Apply a batch of transfers; returns the outcome per *message id*.

    The same transaction id may appear more than once in a batch: the first occurrence is written, and
    every occurrence is judged against what the ledger then holds (identical content = DUPLICATE, else
    CONFLICT), so a repeat inside one batch applies once, exactly like a repeat across batches.
    """
    if not entries:
        return {}
    first: dict[str, Entry] = {}
    for entry in entries:
        first.setdefault(entry.transaction.transaction_id, entry)
    unique = list(first.values())
    rows = (
        db.run(
            _APPLY,
            ids=[e.transaction.transaction_id for e in unique],
            accounts=[e.transaction.account_id for e in unique],
            counterparties=[e.transaction.counterparty_id for e in unique],
            amounts=[e.transaction.amount_minor for e in unique],
            currencies=[e.transaction.currency for e in unique],
            created=[e.transaction.created_at_utc.isoformat() for e in unique],
            hashes=[e.transaction.payload_hash for e in unique],
            messages=[e.message_id for e in unique],
        )
        or []
    )
    stored: dict[str, str] = {}  # transaction id -> payload hash the ledger holds
    inserted_now: set[str] = set()
    unresolved: list[str] = []
    for txn_id, inserted, existing_hash, _ in rows:
        key = str(txn_id)
        if inserted:
            inserted_now.add(key)
            stored[key] = first[key].transaction.payload_hash
        elif existing_hash is None:
            unresolved.append(key)  # inserted by a concurrent writer after our snapshot was taken
        else:
            stored[key] = str(existing_hash)
    if unresolved:
        for txn_id, existing_hash in db.run(_EXISTING, ids=unresolved) or []:
            stored[str(txn_id)] = str(existing_hash)
    missing = set(first) - set(stored)
    if missing:
        raise RuntimeError(f"ledger returned no outcome for {sorted(missing)}")

    outcomes: dict[str, Outcome] = {}
    for entry in entries:
        txn_id = entry.transaction.transaction_id
        if txn_id in inserted_now and first[txn_id] is entry:
            outcomes[entry.message_id] = Outcome.COMMITTED
        elif stored[txn_id] == entry.transaction.payload_hash:
            outcomes[entry.message_id] = Outcome.DUPLICATE
        else:
            outcomes[entry.message_id] = Outcome.CONFLICT
    return outcomes


_TRANSIENT_SQLSTATES = {"40P01", "40001", "57P01", "57P02", "57P03", "25006"}  # deadlock, serialization,
# admin shutdown, crash shutdown, cannot connect now, read-only transaction (writer moved during failover)


class Ledger:
    """The ledger as the processor sees it: migrated on first use, one retry on a broken connection."""

    def __init__(self, connector: LedgerConnector, *, auto_migrate: bool) -> None:
        self._connector = connector
        self._auto_migrate = auto_migrate
        self._migrated = False

    def apply(self, entries: Sequence[Entry]) -> dict[str, Outcome]:
        for attempt in (1, 2):
            try:
                conn = self._connector.connection()
                if self._auto_migrate and not self._migrated:
                    migrate(conn)
                    self._migrated = True
                return apply_batch(conn, entries)
            except CONNECTION_ERRORS:
                self._connector.discard()
                if attempt == 2:
                    raise
            except pg8000.native.DatabaseError as exc:
                self._connector.discard()
                if attempt == 2 or _sqlstate(exc) not in _TRANSIENT_SQLSTATES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
