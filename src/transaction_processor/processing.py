"""The processor's logic, free of Lambda and Powertools: a batch in, an outcome per message out.

Order matters for "never lose, never apply twice": (0) the fence - nothing is written in a region that is
not the active one (DESIGN §4 rule 5), (1) parse every record, (2) journal the valid ones to
S3, (3) apply them to the ledger in one round trip, (4) record their status in DynamoDB. Any failure in
(2)-(4) raises, so the whole batch is redelivered and replays are no-ops in the ledger. A record the ledger
refuses fails alone (``rejected_by_ledger``, no status item) and its journal line is marked, so lost-write
reconciliation never replays it. The status written is what the ledger holds under each id (a re-stamped retry
is the same transfer; a conflict fails its message but the status still says what the ledger holds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tandem_core.ledger import Applied, Outcome
from tandem_core.models import Entry, InvalidMessage, parse_transaction
from tandem_core.status import StatusWrite


@dataclass(frozen=True)
class Message:
    message_id: str
    body: str


def messages_from_event(event: Any) -> list[Message]:
    """The SQS records of a Lambda event, or a ValueError naming the first malformed one.

    A malformed event is the invoker's error, not data: failing the invocation with one clear line beats a
    KeyError from deep inside a library. Records are named by their index in ``Records`` (from 0).
    """
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValueError("not an SQS event: 'Records' must be a list")
    messages: list[Message] = []
    for index, record in enumerate(records):
        where = f"Records[{index}]"
        if not isinstance(record, dict):
            raise ValueError(f"not an SQS event: {where} is not an object")
        message_id, body = record.get("messageId"), record.get("body")
        if message_id is None:
            raise ValueError(f"not an SQS event: {where} has no messageId")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError(f"not an SQS event: {where}.messageId must be a non-empty string")
        if not message_id.isprintable():  # SQS ids are UUIDs; a surrogate would not even encode as UTF-8
            raise ValueError(f"not an SQS event: {where}.messageId holds a non-printable character")
        if not isinstance(body, str):
            raise ValueError(f"not an SQS event: {where}.body must be a string")
        messages.append(Message(message_id, body))
    return messages


MAX_REPLAY = 100  # journal lines per replay request: one ledger round trip, well inside the Timeout


def replay_messages(event: Any) -> list[Message]:
    """A reconciliation's replay request - ``{"replay": [journal line, ...]}`` - as messages, or a ValueError.

    Each line carries the original ``message_id`` and ``transaction`` (see :mod:`tandem_core.archive`); the
    transaction goes through :meth:`Processor.process` like any message, so a transaction the ledger holds
    already is a ``duplicate`` and one it lacks is ``committed`` - the same exactly-once path, no second one.
    """
    lines = event.get("replay") if isinstance(event, dict) else None
    if not isinstance(lines, list) or not 0 < len(lines) <= MAX_REPLAY:
        raise ValueError(f"not a replay request: 'replay' must be a list of 1 to {MAX_REPLAY} journal lines")
    messages: list[Message] = []
    for index, line in enumerate(lines):
        where = f"replay[{index}]"
        if not isinstance(line, dict):
            raise ValueError(f"not a replay request: {where} is not an object")
        message_id, transaction = line.get("message_id"), line.get("transaction")
        if not isinstance(message_id, str) or not message_id or not message_id.isprintable():
            raise ValueError(f"not a replay request: {where}.message_id must be a non-empty printable string")
        if not isinstance(transaction, dict):
            raise ValueError(f"not a replay request: {where}.transaction must be an object")
        messages.append(Message(message_id, json.dumps(transaction)))
    return messages


@dataclass(frozen=True)
class RecordResult:
    """What happened to one message. ``reason`` is set exactly when the message failed."""

    outcome: str  # committed | duplicate | invalid | conflict | rejected_by_ledger
    reason: str | None = None
    transaction_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.reason is not None


@dataclass
class BatchResult:
    results: dict[str, RecordResult] = field(default_factory=dict)
    archive_key: str | None = None
    #: status items that described another transfer than the ledger holds, replaced (kept beside it)
    status_replaced: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results.values() if r.outcome == outcome)

    @property
    def failures(self) -> list[str]:
        return [mid for mid, r in self.results.items() if r.failed]


class LedgerPort(Protocol):
    def apply(self, entries: Sequence[Entry]) -> Applied: ...


class JournalPort(Protocol):
    def append(self, entries: Sequence[Entry], region: str, at: datetime) -> str | None: ...

    def mark_refused(self, key: str, entries: Sequence[Entry], region: str, refused: Mapping[str, str]) -> None: ...


class StatusPort(Protocol):
    def record(self, writes: Sequence[StatusWrite]) -> list[str]: ...


class FencePort(Protocol):
    def check(self) -> object:
        """Return when this region may commit; raise :class:`tandem_core.fencing.Fenced` otherwise."""
        ...


@dataclass(frozen=True)
class Processor:
    ledger: LedgerPort
    journal: JournalPort
    status: StatusPort
    region: str
    fence: FencePort | None = None  # None: a single region, nothing to fence against
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Raises ``Fenced`` (before anything is written) when another region is the active one."""
        if self.fence is not None:
            self.fence.check()
        result = BatchResult()
        entries: list[Entry] = []
        seen: set[str] = set()
        for msg in messages:
            if msg.message_id in seen:
                continue  # one message id is one message (a replay may carry a line twice): one outcome
            seen.add(msg.message_id)
            try:
                txn = parse_transaction(msg.body)
            except InvalidMessage as exc:
                result.results[msg.message_id] = RecordResult("invalid", reason=f"invalid: {exc.reason}")
                continue
            entries.append(Entry(txn, msg.message_id))
        if not entries:
            return result

        now = self.clock()
        result.archive_key = self.journal.append(entries, self.region, now)
        applied = self.ledger.apply(entries)
        if applied.refused and result.archive_key is not None:
            self.journal.mark_refused(result.archive_key, entries, self.region, applied.refused)

        for entry in entries:
            txn_id = entry.transaction.transaction_id
            outcome = applied.outcomes[entry.message_id]
            if outcome is Outcome.REJECTED_BY_LEDGER:
                reason = f"rejected_by_ledger: {applied.refused[entry.message_id]}"
            elif outcome is Outcome.CONFLICT:
                reason = f"conflict: transaction {txn_id} was already applied as another transfer"
            else:
                reason = None
            result.results[entry.message_id] = RecordResult(outcome.value, reason=reason, transaction_id=txn_id)
        # one status per transaction the ledger holds - its row, whichever message asked (the ledger is the truth)
        committed_now = {e.transaction.transaction_id for e in entries
                         if applied.outcomes[e.message_id] is Outcome.COMMITTED}  # fmt: skip
        writes = [
            StatusWrite(held, "COMMITTED", self.region, now, first=txn_id in committed_now)
            for txn_id, held in applied.held.items()
        ]
        result.status_replaced = self.status.record(writes)
        return result
