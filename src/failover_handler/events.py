"""What starts the failover handler: the alarm's state-change event, or an operator's request.

- automatic: EventBridge's "CloudWatch Alarm State Change" of this region's composite alarm "peer region
  impaired" (the shape AWS sends; its ``previousState`` is what the bootstrap guard reads);
- operator (Lambda Invoke): ``{"action": "plan" | "failover" | "switchover" | "failback" | "status" |
  "reconcile" | "resume", "force": false}`` - ``force`` only with ``failover``, ``switchover`` and ``failback``;
- the monitor of the region being activated (``"trigger": "monitor"``): ``reconcile``, and ``resume`` - an
  execution for this region whose step failed or whose invocation died (its lease lapsed) goes on.

Anything else is refused with one line naming what is wrong, before anything is read or written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator


class Action(enum.StrEnum):
    PLAN = "plan"
    FAILOVER = "failover"
    SWITCHOVER = "switchover"
    FAILBACK = "failback"
    STATUS = "status"
    RECONCILE = "reconcile"
    RESUME = "resume"  # only a running execution for this region whose lease lapsed; never starts one


class _AlarmState(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
    reason: str = ""
    timestamp: datetime | None = None


class _AlarmDetail(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    alarm_name: str = Field(alias="alarmName", min_length=1)
    state: _AlarmState
    previous_state: _AlarmState = Field(alias="previousState")


class _AlarmEvent(BaseModel):
    """EventBridge's alarm state-change event (unknown fields are AWS's to add)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    source: Literal["aws.cloudwatch"]
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    id: str = Field(min_length=1)
    time: datetime
    region: str = Field(min_length=1)
    detail: _AlarmDetail


class _OperatorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    force: StrictBool = False  # never coerced: "yes" or 1 must not force a failover
    trigger: Literal["operator", "monitor"] = "operator"  # the monitor asks to reconcile or resume only

    @model_validator(mode="after")
    def _force_only_for_moves(self) -> _OperatorRequest:
        if self.force and self.action not in (Action.FAILOVER, Action.SWITCHOVER, Action.FAILBACK):
            raise ValueError(f"force applies to failover, switchover and failback only, not {self.action.value}")
        if self.trigger == "monitor" and self.action not in (Action.RECONCILE, Action.RESUME):
            raise ValueError(f"the monitor asks for reconcile or resume only, not {self.action.value}")
        return self


@dataclass(frozen=True)
class Request:
    """One invocation's request: what to do, who asked, and (for the alarm) the states it moved between."""

    action: Action
    trigger: Literal["alarm", "operator", "monitor"]
    force: bool = False
    alarm_name: str | None = None
    alarm_state: str | None = None
    previous_alarm_state: str | None = None
    event_id: str | None = None  # the alarm event's id: its retries carry the same one

    @property
    def automatic(self) -> bool:
        return self.trigger == "alarm"


def parse_request(event: Any) -> Request:
    """The request; ValueError (one line, naming what is wrong) for anything else."""
    if not isinstance(event, dict):
        raise ValueError(
            f"failover_handler takes a JSON object (an alarm event or an action), not {type(event).__name__}"
        )
    if "source" in event or "detail-type" in event:
        try:
            alarm = _AlarmEvent.model_validate(event)
        except ValidationError as exc:
            raise ValueError(f"not an alarm state-change event: {_first(exc)}") from None
        return Request(
            Action.FAILOVER, "alarm", alarm_name=alarm.detail.alarm_name, alarm_state=alarm.detail.state.value,
            previous_alarm_state=alarm.detail.previous_state.value, event_id=alarm.id,
        )  # fmt: skip
    try:
        request = _OperatorRequest.model_validate(event)
    except ValidationError as exc:
        raise ValueError(f"not an operator request: {_first(exc)}") from None
    return Request(request.action, request.trigger, force=request.force)


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "event"
    return f"{where}: {error['msg']}"
