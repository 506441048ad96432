"""Transaction status in the DynamoDB global table.

Single-table keys: ``pk = "TXN#<transaction id>"``, ``sk = "STATUS"`` (control records of the failover work
use other ``pk`` prefixes). A batch's status writes go in ONE TransactWriteItems call (up to 100 items; the
mapping delivers at most 10), each with a condition that lets it land only where no status exists yet or the
stored one has the same payload hash - so a replay anywhere (including the DR region after failover) is
idempotent and a different payload under a known id is caught. A transaction the ledger applied just now is
a Put; one it had applied before (a redelivery, a forwarded copy processed elsewhere later) an Update whose
``if_not_exists`` keeps the first outcome's region, time and message id: who committed it, and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from tandem_core.models import Entry

_CONDITION_FAILED = "ConditionalCheckFailed"  # a cancellation reason
_CANCELLED = "TransactionCanceledException"


@dataclass(frozen=True)
class StatusWrite:
    entry: Entry
    status: str
    region: str
    recorded_at: datetime
    first: bool = False  # the ledger applied it just now: no outcome of it can have been recorded before


class StatusConflict(RuntimeError):
    """The table holds a different payload for these transaction ids than the ledger just accepted."""

    def __init__(self, transaction_ids: list[str]) -> None:
        super().__init__(f"status item holds a different payload for {transaction_ids}")
        self.transaction_ids = transaction_ids


def status_key(transaction_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"TXN#{transaction_id}"}, "sk": {"S": "STATUS"}}


MAX_ITEMS = 100  # TransactWriteItems' limit per call


class StatusStore:
    """One conditional TransactWriteItems per batch (per 100 transactions).

    Cost: a transactional write is two write units per item instead of one - the price of keeping the per-item
    condition in one round trip (ten concurrent PutItems cost 10 calls and 77 % of the batch's time). When a
    condition fails DynamoDB cancels the whole call; the reasons say which items clashed, and the others go
    again in a second call - only on that (rare) path.
    """

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def record(self, writes: Sequence[StatusWrite]) -> None:
        """Write every status; raises StatusConflict naming the ids whose stored payload differs (after the
        others are written). Any other error propagates, so the batch is retried as a whole."""
        conflicts: list[str] = []
        for start in range(0, len(writes), MAX_ITEMS):
            chunk = list(writes[start : start + MAX_ITEMS])
            clashing = self._transact(chunk)
            if clashing:
                conflicts += [chunk[i].entry.transaction.transaction_id for i in clashing]
                rest = [w for i, w in enumerate(chunk) if i not in clashing]
                if rest and self._transact(rest):  # a clash in between: a concurrent writer; retry the batch
                    raise RuntimeError("status items changed while the batch was being recorded")
        if conflicts:
            raise StatusConflict(conflicts)

    def _transact(self, writes: list[StatusWrite]) -> set[int]:
        """The indexes of the writes whose condition failed (nothing was written then); empty: all written."""
        if not writes:
            return set()
        try:
            self._db.transact_write_items(TransactItems=[self._action(w) for w in writes])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _CANCELLED:
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            clashing = {i for i, code in enumerate(reasons) if code == _CONDITION_FAILED}
            if not clashing or any(code not in (_CONDITION_FAILED, "None", None) for code in reasons):
                raise  # a throttle or a transaction conflict: the whole batch is retried
            return clashing
        return set()

    def _action(self, w: StatusWrite) -> dict[str, Any]:
        """A first outcome is a Put: nothing of it is stored yet (but a copy the other region wrote with the same
        payload, which it may replace). A replay - the ledger had it already - is an Update whose
        ``if_not_exists`` keeps the stored region, time and message id."""
        t = w.entry.transaction
        fields = {
            "status": {"S": w.status},
            "payload_hash": {"S": t.payload_hash},
            "account_id": {"S": t.account_id},
            "counterparty_id": {"S": t.counterparty_id},
            "amount_minor": {"N": str(t.amount_minor)},
            "currency": {"S": t.currency},
            "created_at": {"S": t.canonical()["created_at"]},
        }
        first = {"message_id": {"S": w.entry.message_id}, "region": {"S": w.region},
                 "recorded_at": {"S": w.recorded_at.isoformat()}}  # fmt: skip
        common = {"TableName": self._table, "ConditionExpression": "attribute_not_exists(pk) OR payload_hash = :h"}
        if w.first:
            item = {**status_key(t.transaction_id), **fields, **first}
            return {"Put": {**common, "Item": item, "ExpressionAttributeValues": {":h": fields["payload_hash"]}}}
        names = {f"#{n}": n for n in (*fields, *first)}
        sets = [f"#{n} = :{n}" for n in fields] + [f"#{n} = if_not_exists(#{n}, :{n})" for n in first]
        values = {f":{n}": v for n, v in {**fields, **first}.items()} | {":h": fields["payload_hash"]}
        update = {"Key": status_key(t.transaction_id), "UpdateExpression": "SET " + ", ".join(sets),
                  "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}  # fmt: skip
        return {"Update": {**common, **update}}

    def get(self, transaction_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self._table, Key=status_key(transaction_id), ConsistentRead=True)
        found: dict[str, Any] | None = item.get("Item")
        return found
