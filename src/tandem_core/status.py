"""Transaction status in the DynamoDB global table.

Single-table keys: ``pk = "TXN#<transaction id>"``, ``sk = "STATUS"`` (control records of the failover work
use other ``pk`` prefixes). Writes are conditional - a status may be written again only with the same
payload hash - so a replay anywhere (including the DR region after failover) is idempotent, and a
different payload under a known id is caught. The writes of a batch run concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from tandem_core.models import Entry

_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class StatusWrite:
    entry: Entry
    status: str
    region: str
    recorded_at: datetime


class StatusConflict(RuntimeError):
    """The table holds a different payload for these transaction ids than the ledger just accepted."""

    def __init__(self, transaction_ids: list[str]) -> None:
        super().__init__(f"status item holds a different payload for {transaction_ids}")
        self.transaction_ids = transaction_ids


def status_key(transaction_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"TXN#{transaction_id}"}, "sk": {"S": "STATUS"}}


class StatusStore:
    """Conditional PutItem per transaction, issued concurrently.

    Why not one TransactWriteItems: it costs twice the write capacity, cancels every write when one
    condition fails, and buys nothing here - each status write is independent and idempotent.
    """

    def __init__(self, dynamodb: Any, table: str, concurrency: int = 10) -> None:
        self._db = dynamodb
        self._table = table
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="status")

    def record(self, writes: Sequence[StatusWrite]) -> None:
        """Write every status; raises StatusConflict naming the ids whose stored payload differs.

        Any other error propagates (after all writes finished), so the batch is retried as a whole.
        """
        results = list(self._pool.map(self._put, writes))
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        conflicts = [w.entry.transaction.transaction_id for w, r in zip(writes, results, strict=True) if r is False]
        if conflicts:
            raise StatusConflict(conflicts)

    def _put(self, w: StatusWrite) -> bool | BaseException:
        """True when written, False when the stored payload differs; other errors are returned."""
        t = w.entry.transaction
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **status_key(t.transaction_id),
                    "status": {"S": w.status},
                    "payload_hash": {"S": t.payload_hash},
                    "account_id": {"S": t.account_id},
                    "counterparty_id": {"S": t.counterparty_id},
                    "amount_minor": {"N": str(t.amount_minor)},
                    "currency": {"S": t.currency},
                    "created_at": {"S": t.canonical()["created_at"]},
                    "message_id": {"S": w.entry.message_id},
                    "region": {"S": w.region},
                    "recorded_at": {"S": w.recorded_at.isoformat()},
                },
                ConditionExpression="attribute_not_exists(pk) OR payload_hash = :h",
                ExpressionAttributeValues={":h": {"S": t.payload_hash}},
            )
        except Exception as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
                return False
            return exc
        return True

    def get(self, transaction_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self._table, Key=status_key(transaction_id), ConsistentRead=True)
        found: dict[str, Any] | None = item.get("Item")
        return found
