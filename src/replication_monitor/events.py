"""What starts a monitor run: the EventBridge schedule's event, or an empty object (a manual invoke).

Nothing in the event changes what a run does (cadence and thresholds are settings); the event is checked so
that a wrongly wired trigger fails loudly, in one line, instead of running on a misunderstanding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _ScheduledEvent(BaseModel):
    """The shape EventBridge delivers for a schedule rule (unknown fields are AWS's to add)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    source: Literal["aws.events"]
    detail_type: Literal["Scheduled Event"] = Field(alias="detail-type")
    time: datetime
    region: str | None = None
    resources: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Trigger:
    kind: Literal["schedule", "manual"]
    scheduled_at: datetime | None = None
    rule: str | None = None


def parse_trigger(event: Any) -> Trigger:
    """The run's trigger; ValueError (one line, naming what is wrong) for anything else."""
    if not isinstance(event, dict):
        kind = type(event).__name__
        raise ValueError(f"replication_monitor takes a JSON object (a scheduled event or {{}}), not {kind}")
    if not event:
        return Trigger("manual")
    try:
        parsed = _ScheduledEvent.model_validate(event)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise ValueError(f"not a scheduled event: {where}: {first['msg']}") from None
    return Trigger("schedule", parsed.time, parsed.resources[0] if parsed.resources else None)
