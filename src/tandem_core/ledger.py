"""The ledger in PostgreSQL: exactly-once application of transfers, one round trip per batch.

One statement (autocommit, so it is its own transaction) inserts the new transaction rows with
``ON CONFLICT DO NOTHING`` and applies the balance effect of exactly the rows it inserted, then reports,
per transaction, whether it was new, an identical replay, or a conflicting reuse of the id. A replay is a
no-op because nothing is inserted for it; a crash before commit applies nothing.

A record the database refuses fails alone. When the statement fails with a *data* error (SQLSTATE class 22
data exception or 23 integrity constraint violation: a cast, a constraint, a NUL byte, a balance leaving
bigint), nothing of it was applied, so the batch is bisected - each half its own statement - until the
refused records stand alone; they are reported ``REJECTED_BY_LEDGER`` with PostgreSQL's message and the
others commit exactly once. Every other error (connectivity, the transient states below, 42xxx schema errors)
is infrastructure or a bug and still fails the whole batch. The happy path stays one round trip.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pg8000.native

from tandem_core.database import CONNECTION_ERRORS, LedgerConnector
from tandem_core.database import sqlstate as _sqlstate
from tandem_core.models import Entry, Transaction, one_line
from tandem_core.schema import SqlRunner, require_current


class Outcome(enum.StrEnum):
    COMMITTED = "committed"  # applied now
    DUPLICATE = "duplicate"  # the same transfer (identity) applied before: success, nothing changed
    CONFLICT = "conflict"  # the id was applied before as another transfer: the first stays
    REJECTED_BY_LEDGER = "rejected_by_ledger"  # the database refused this record (see Applied.refused)


@dataclass(frozen=True)
class Applied:
    """What the ledger did with a batch: the outcome per message id, why each refused message was refused,
    and what the ledger holds under each transaction id it answered for - the truth the status follows."""

    outcomes: dict[str, Outcome]
    refused: dict[str, str] = field(default_factory=dict)  # message id -> PostgreSQL's message (one line)
    held: dict[str, Entry] = field(default_factory=dict)  # transaction id -> the row's transfer and message id


#: the exactly-once statement, a SECURITY DEFINER function of the schema (migration 0003): the processor's role
#: may run it and read the ledger rows, nothing else - no INSERT, UPDATE or DELETE of its own
_APPLY = (
    "SELECT * FROM ledger_apply(CAST(:ids AS uuid[]), CAST(:accounts AS text[]), CAST(:counterparties AS text[]),"
    " CAST(:amounts AS bigint[]), CAST(:currencies AS text[]), CAST(:created AS timestamptz[]),"
    " CAST(:hashes AS text[]), CAST(:messages AS text[]))"
)

_EXISTING = (
    "SELECT CAST(transaction_id AS text), account_id, counterparty_id, amount_minor, CAST(currency AS text),"
    " created_at, message_id FROM ledger_transaction WHERE transaction_id = ANY(CAST(:ids AS uuid[]))"
)


def apply_batch(db: SqlRunner, entries: Sequence[Entry]) -> Applied:
    """Apply a batch of transfers; returns the outcome per *message id*.

    The same transaction id may appear more than once in a batch: the first occurrence is written, and
    every occurrence is judged against what the ledger then holds (the same transfer by its ``identity`` =
    DUPLICATE, else CONFLICT), so a repeat inside one batch applies once, exactly like a repeat across
    batches. Repeats are never sent to the database, so however the batch is split, they are judged against
    the stored row.
    When the database refuses the occurrence that was to be written, the next occurrence of that id takes
    its place (another round, only after a refusal): nothing of the refused one is in the ledger.
    """
    stored: dict[str, Entry] = {}  # transaction id -> what the ledger holds
    written: set[int] = set()  # indexes of the entries this call inserted
    refused: dict[int, str] = {}  # index of a refused entry -> PostgreSQL's message
    while candidates := _candidates(entries, stored, refused):
        _apply_isolating(db, [(i, entries[i]) for i in candidates], stored, written, refused)

    outcomes: dict[str, Outcome] = {}
    for index, entry in enumerate(entries):
        txn_id = entry.transaction.transaction_id
        if index in refused:
            outcomes[entry.message_id] = Outcome.REJECTED_BY_LEDGER
        elif index in written:
            outcomes[entry.message_id] = Outcome.COMMITTED
        elif stored[txn_id].transaction.identity == entry.transaction.identity:
            outcomes[entry.message_id] = Outcome.DUPLICATE
        else:
            outcomes[entry.message_id] = Outcome.CONFLICT
    return Applied(outcomes, {entries[i].message_id: reason for i, reason in refused.items()}, stored)


def _candidates(entries: Sequence[Entry], stored: dict[str, Entry], refused: dict[int, str]) -> list[int]:
    """Indexes of the first not-yet-refused occurrence of every transaction id the ledger has no answer for."""
    seen: set[str] = set()
    out: list[int] = []
    for index, entry in enumerate(entries):
        txn_id = entry.transaction.transaction_id
        if txn_id in stored or txn_id in seen or index in refused:
            continue
        seen.add(txn_id)
        out.append(index)
    return out


def _apply_isolating(
    db: SqlRunner, group: list[tuple[int, Entry]], stored: dict[str, Entry], written: set[int], refused: dict[int, str]
) -> None:
    """Apply ``group`` in one statement; on a data error, bisect until the refused records stand alone."""
    try:
        _apply_statement(db, group, stored, written)
    except pg8000.native.DatabaseError as exc:
        if not _is_data_error(exc):
            raise
        if len(group) == 1:
            refused[group[0][0]] = _refusal(exc)
            return
        half = len(group) // 2
        _apply_isolating(db, group[:half], stored, written, refused)
        _apply_isolating(db, group[half:], stored, written, refused)


def _apply_statement(
    db: SqlRunner, group: list[tuple[int, Entry]], stored: dict[str, Entry], written: set[int]
) -> None:
    """One round trip for entries with distinct transaction ids; records what the ledger now holds for each."""
    by_id = {entry.transaction.transaction_id: (index, entry) for index, entry in group}
    unique = [entry for _, entry in group]
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
    unresolved: list[str] = []
    for txn_id, inserted, *row, _ in rows:
        key = str(txn_id)
        if inserted:
            index, entry = by_id[key]
            written.add(index)
            stored[key] = entry
        elif row[0] is None:
            unresolved.append(key)  # inserted by a concurrent writer after our snapshot was taken
        else:
            stored[key] = _held(key, *row)
    if unresolved:
        for txn_id, *row in db.run(_EXISTING, ids=unresolved) or []:
            stored[str(txn_id)] = _held(str(txn_id), *row)
    missing = set(by_id) - set(stored)
    if missing:
        raise RuntimeError(f"ledger returned no outcome for {sorted(missing)}")


def _held(transaction_id: str, *row: Any) -> Entry:
    """A row the ledger held before this statement (a replay or a conflict: rare, so built only then):
    account, counterparty, amount in minor units, currency, created_at, message id."""
    account, counterparty, amount, currency, created_at, message_id = row
    txn = Transaction.from_ledger(
        transaction_id, str(account), str(counterparty), int(amount), str(currency), created_at
    )
    return Entry(txn, str(message_id))


def _is_data_error(exc: BaseException) -> bool:
    """A refusal of the *data* (class 22 data exception, 23 integrity constraint violation), not of the system."""
    code = _sqlstate(exc) or ""
    return code[:2] in {"22", "23"} and code not in _TRANSIENT_SQLSTATES


def _refusal(exc: BaseException) -> str:
    """PostgreSQL's message and SQLSTATE as one log line (the message may quote the refused value)."""
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    message = str(detail.get("M") or exc)
    return one_line(f"{message} (SQLSTATE {_sqlstate(exc)})")


_TRANSIENT_SQLSTATES = {"40P01", "40001", "57P01", "57P02", "57P03", "25006"}  # deadlock, serialization,
# admin shutdown, crash shutdown, cannot connect now, read-only transaction (writer moved during failover)


class Ledger:
    """The ledger as the processor sees it: the schema checked once per connection, one retry on a broken one."""

    def __init__(self, connector: LedgerConnector) -> None:
        self._connector = connector
        self._checked: pg8000.native.Connection | None = None

    def open_ahead(self) -> None:
        """Connect and check the schema on a background thread (a cold start's other work overlaps the waits)."""
        self._connector.open_ahead(prepare=self._check_schema)

    def _check_schema(self, conn: pg8000.native.Connection) -> None:
        """The schema must be this code's (it is changed at deploy, never here): checked on each new connection,
        which also follows the writer to another instance after a failover."""
        if self._checked is not conn:
            require_current(conn)
            self._checked = conn

    def apply(self, entries: Sequence[Entry]) -> Applied:
        """Apply the batch; a retry after a failure in mid-bisection reports what the first try wrote as DUPLICATE."""
        if not entries:
            return Applied({})
        for attempt in (1, 2):
            try:
                conn = self._connector.connection()
                self._check_schema(conn)
                return apply_batch(conn, entries)
            except CONNECTION_ERRORS:
                self._connector.discard()
                if attempt == 2:
                    raise
            except pg8000.native.DatabaseError as exc:
                self._connector.discard()
                if attempt == 2 or _sqlstate(exc) not in _TRANSIENT_SQLSTATES:
                    raise
            except BaseException:
                # e.g. a client-side encoding error half-way through a message: the protocol state is unknown,
                # and a connection out of step answers the next statement with the previous one's rows
                self._connector.discard()
                raise
        raise AssertionError("unreachable")  # pragma: no cover
