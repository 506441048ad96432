"""Transaction status in the DynamoDB global table: what the ledger holds, readable without the database.

Single-table keys: ``pk = "TXN#<transaction id>"``, ``sk = "STATUS"`` (control records of the failover work
use other ``pk`` prefixes). A batch's status writes go in ONE TransactWriteItems call (up to 100 items; the
mapping delivers at most 10).

**The ledger is the truth.** A status write carries what the ledger holds under the id (the processor passes
the ledger's row, not the message), so it always lands. Its condition - no item yet, or one of the same
transfer (:attr:`~tandem_core.models.Transaction.identity`) - only tells the two cases apart: the usual one in
one round trip, and the rare *clash*, where the item describes another transfer (written by a region whose
ledger row died with its writer at an unplanned failover, or by the other side of a split brain). A clash is
overwritten with the ledger's truth and the replaced item is kept beside it in ``replaced``; it is never a
reason to fail a message the ledger committed.

A transaction the ledger applied just now is a Put; one it had applied before (a redelivery, a forwarded copy
processed elsewhere later) an Update whose ``if_not_exists`` keeps the first outcome's region and time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from tandem_core.models import Entry

_CONDITION_FAILED = "ConditionalCheckFailed"  # a cancellation reason
_CANCELLED = "TransactionCanceledException"


@dataclass(frozen=True)
class StatusWrite:
    entry: Entry  # what the ledger holds under the id: its transfer and the message that carried it
    status: str
    region: str
    recorded_at: datetime
    first: bool = False  # the ledger applied it just now: no outcome of it can have been recorded before


def status_key(transaction_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"TXN#{transaction_id}"}, "sk": {"S": "STATUS"}}


MAX_ITEMS = 100  # TransactWriteItems' limit per call


def _fields(w: StatusWrite) -> tuple[dict[str, Any], dict[str, Any]]:
    """The item's attributes: what the ledger holds (always written), and who recorded it first and when."""
    t = w.entry.transaction
    fields = {
        "status": {"S": w.status},
        "payload_hash": {"S": t.payload_hash},
        "identity_hash": {"S": t.identity_hash},
        "account_id": {"S": t.account_id},
        "counterparty_id": {"S": t.counterparty_id},
        "amount_minor": {"N": str(t.amount_minor)},
        "currency": {"S": t.currency},
        "created_at": {"S": t.canonical()["created_at"]},
        "message_id": {"S": w.entry.message_id},
    }
    first = {"region": {"S": w.region}, "recorded_at": {"S": w.recorded_at.isoformat()}}
    return fields, first


class StatusStore:
    """One conditional TransactWriteItems per batch (per 100 transactions).

    Cost: a transactional write is two write units per item instead of one - the price of keeping the per-item
    condition in one round trip (ten concurrent PutItems cost 10 calls and 77 % of the batch's time). When a
    condition fails DynamoDB cancels the whole call; the reasons say which items clashed, the others go again
    in a second call and each clash is read and replaced - only on that (rare) path.
    """

    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def record(self, writes: Sequence[StatusWrite]) -> list[str]:
        """Write every status; returns the transaction ids whose item described another transfer and was
        replaced (kept in its ``replaced`` list). Any error propagates, so the batch is retried as a whole."""
        replaced: list[str] = []
        for start in range(0, len(writes), MAX_ITEMS):
            chunk = list(writes[start : start + MAX_ITEMS])
            clashing = self._transact(chunk)
            if clashing:
                rest = [w for i, w in enumerate(chunk) if i not in clashing]
                if rest and self._transact(rest):  # a clash in between: a concurrent writer; retry the batch
                    raise RuntimeError("status items changed while the batch was being recorded")
                for i in sorted(clashing):
                    self._replace(chunk[i])
                    replaced.append(chunk[i].entry.transaction.transaction_id)
        return replaced

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
        """A first outcome is a Put (the same transfer written by the other region may be there: replaced); a
        replay - the ledger had it already - an Update whose ``if_not_exists`` keeps region and time."""
        fields, first = _fields(w)
        common = {
            "TableName": self._table,
            "ConditionExpression": "attribute_not_exists(pk) OR identity_hash = :i"
                                   " OR (attribute_not_exists(identity_hash) AND payload_hash = :h)",
        }  # fmt: skip
        same = {":i": fields["identity_hash"], ":h": fields["payload_hash"]}
        t = w.entry.transaction
        if w.first:
            item = {**status_key(t.transaction_id), **fields, **first}
            return {"Put": {**common, "Item": item, "ExpressionAttributeValues": same}}
        names = {f"#{n}": n for n in (*fields, *first)}
        sets = [f"#{n} = :{n}" for n in fields] + [f"#{n} = if_not_exists(#{n}, :{n})" for n in first]
        values = {f":{n}": v for n, v in {**fields, **first}.items()} | same
        update = {"Key": status_key(t.transaction_id), "UpdateExpression": "SET " + ", ".join(sets),
                  "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}  # fmt: skip
        return {"Update": {**common, **update}}

    def _replace(self, w: StatusWrite) -> None:
        """The item describes another transfer than the ledger holds: the ledger's truth replaces it, and what
        it said is appended to ``replaced``. Conditional on the item being the one read (else: retry)."""
        key = status_key(w.entry.transaction.transaction_id)
        old = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
        fields, first = _fields(w)
        was = {n: v for n, v in old.items() if n in (*fields, *first, "status")} | {
            "replaced_at": {"S": self._clock().isoformat()}
        }
        values = {f":{n}": v for n, v in {**fields, **first}.items()}
        values |= {":was": {"L": [{"M": was}]}, ":none": {"L": []}}
        condition = "attribute_not_exists(payload_hash)"
        if "payload_hash" in old:
            condition, values[":old"] = "payload_hash = :old", old["payload_hash"]
        self._db.update_item(
            TableName=self._table, Key=key, ConditionExpression=condition,
            UpdateExpression="SET " + ", ".join(f"#{n} = :{n}" for n in (*fields, *first))
                             + ", replaced = list_append(if_not_exists(replaced, :none), :was)",
            ExpressionAttributeNames={f"#{n}": n for n in (*fields, *first)}, ExpressionAttributeValues=values,
        )  # fmt: skip

    def get(self, transaction_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self._table, Key=status_key(transaction_id), ConsistentRead=True)
        found: dict[str, Any] | None = item.get("Item")
        return found
