"""What every execution did, newest first: the record behind ``tandem executions`` (DESIGN §4 rule 7).

Items ``pk=EXECUTION, sk=<started at, ms, zero-padded>#<execution id>`` in the global table, written by the
region that acted (so the peer sees them once it is back). An execution's item is written when it starts
and rewritten when an invocation ends it (completed, failed - to be resumed - or refused); a resumed one
keeps its item and appends the steps it ran. Refusals a human must see (readiness, bootstrap guard, delay)
are recorded too; the duplicates of a running execution are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem_core.heartbeat import from_attributes, to_attributes

PK = "EXECUTION"


def sort_key(started_at: float, execution_id: str) -> str:
    return f"{round(started_at * 1000):015d}#{execution_id}"


@dataclass
class ExecutionRecord:
    id: str
    trigger: str
    action: str
    mode: str | None
    region: str
    started_at: float
    outcome: str = "running"  # running | completed | failed | refused
    reasons: list[str] = field(default_factory=list)
    finished_at: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    rpo_estimate_seconds: float | None = None
    epoch: int | None = None
    report: dict[str, Any] | None = None  # a reconciliation's: what was missing, re-applied, redriven, left

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "action": self.action,
            "mode": self.mode,
            "region": self.region,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "steps": [dict(s) for s in self.steps],
            "rpo_estimate_seconds": self.rpo_estimate_seconds,
            "epoch": self.epoch,
            **({"report": self.report} if self.report is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionRecord:
        return cls(
            id=str(data["id"]), trigger=str(data["trigger"]), action=str(data["action"]),
            mode=None if data.get("mode") is None else str(data["mode"]), region=str(data["region"]),
            started_at=float(data["started_at"]), outcome=str(data.get("outcome", "running")),
            reasons=[str(r) for r in data.get("reasons", [])],
            finished_at=_float(data.get("finished_at")),
            steps=[dict(s) for s in data.get("steps", [])],
            rpo_estimate_seconds=_float(data.get("rpo_estimate_seconds")),
            epoch=None if data.get("epoch") is None else int(data["epoch"]),
            report=dict(data["report"]) if isinstance(data.get("report"), dict) else None,
        )  # fmt: skip


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class ExecutionLog:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def write(self, record: ExecutionRecord) -> None:
        key = {"pk": {"S": PK}, "sk": {"S": sort_key(record.started_at, record.id)}}
        self._db.put_item(TableName=self._table, Item={**key, **to_attributes(record.as_dict())})

    def get(self, started_at: float, execution_id: str) -> ExecutionRecord | None:
        key = {"pk": {"S": PK}, "sk": {"S": sort_key(started_at, execution_id)}}
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        return None if item is None else ExecutionRecord.from_dict(from_attributes(item))

    def latest(self, limit: int = 20) -> list[ExecutionRecord]:
        response = self._db.query(
            TableName=self._table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": PK}},
            ScanIndexForward=False, Limit=limit, ConsistentRead=True,
        )  # fmt: skip
        return [ExecutionRecord.from_dict(from_attributes(item)) for item in response.get("Items", [])]


def steps_of(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Step records (objects with ``as_dict``) as plain data for an execution record."""
    return [r.as_dict() for r in records]
