"""CloudWatch alarms that evaluate, and composite alarms (moto 5.2.5 stores both kinds of input, never decides).

Failover hinges on alarms changing state (the handler's EventBridge rule, the Route53 metric health check), so
the twin evaluates them the way CloudWatch does, on the twin clock:

- :class:`AlarmEvaluator` ``tick(now)`` evaluates every metric alarm of every account and region from the
  datapoints moto stored, then every composite alarm, sets changed states through moto's own
  ``set_alarm_state`` path (so ``DescribeAlarms`` and ``DescribeAlarmHistory`` show them) and tells its
  listeners (:class:`AlarmStateChange`) about every state change, including ones made with the
  ``SetAlarmState`` API; SNS alarm actions are published through moto's SNS backend.
- API fixes installed into moto by :func:`install`: ``PutCompositeAlarm`` and ``DescribeAlarmHistory``
  (missing in moto); ``DescribeAlarms`` honours ``AlarmTypes`` (metric alarms only by default, as AWS) and
  combines its filters (moto applies only the first one given), plus ``ChildrenOfAlarmName`` /
  ``ParentsOfAlarmName``; ``PutMetricAlarm`` creates an alarm in INSUFFICIENT_DATA and an update keeps the
  alarm's state (moto starts every alarm, and resets every updated one, in OK).

Evaluation semantics, and where they differ from AWS:

- The evaluation range is the ``EvaluationPeriods`` windows of ``Period`` emulated seconds ending at ``now``
  (window k holds datapoints with ``now - (k+1)*Period < t <= now - k*Period``). AWS aligns periods to the
  period boundary; sliding windows make the result independent of tick phase and differ by less than one
  period. Datapoints later than ``now`` are ignored.
- Statistic (SampleCount, Average, Sum, Minimum, Maximum) over raw values and statistic sets; ExtendedStatistic
  ``pNN`` / ``pNN.N`` by nearest rank over raw values only (statistic sets carry no distribution). Other
  extended statistics (trimmed means etc.), metric-math alarms (``Metrics=[...]``) and anomaly-detection
  operators are not evaluated: such alarms keep whatever state they have (set them with ``SetAlarmState``).
- Dimensions must match exactly (same names and values, no more, no fewer); a ``Unit`` on the alarm restricts
  the datapoints to that unit.
- ``DatapointsToAlarm`` (M of N) and ``TreatMissingData`` as AWS documents them: ``breaching`` /
  ``notBreaching`` fill missing windows; ``missing`` goes to INSUFFICIENT_DATA when every window is empty;
  ``ignore`` then keeps the state; with fewer datapoints than M that all breach, ``missing`` alarms and
  ``ignore`` keeps the state (AWS's table). AWS's extra look-back for older datapoints is not modelled.
  ``AWS/DynamoDB`` metrics always ``ignore``, as in AWS.
- Datapoints put without ``Timestamp`` are stamped by moto with *real* UTC time; the twin's store holds
  *emulated* time. So the first tick that sees such a datapoint re-stamps it with the emulated time of the
  instant moto stamped (``clock.to_emulated``), never later than that tick's ``now``; until then
  GetMetricStatistics shows moto's stamp.
- Timestamps written by the evaluator are emulated time; those written by API calls (``SetAlarmState``,
  ``PutMetricAlarm``) are moto's real time. They coincide at clock scale 1.

Composite alarms: ``AlarmRule`` with ``ALARM(x)``, ``OK(x)``, ``INSUFFICIENT_DATA(x)`` (``x`` a name or an
ARN, quoted or not), ``AND``, ``OR``, ``NOT``, parentheses, ``TRUE``/``FALSE``; ``AT_LEAST`` is not supported.
They are evaluated after metric alarms, children before parents; composites in a cycle are not evaluated (AWS
stops evaluating them too). Action suppression is stored and returned, not applied.

State lives in moto (alarm objects, and the history list kept on each CloudWatch backend, which survives alarm
deletion as in AWS); an evaluator only remembers how far it has read each backend's history.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch.exceptions import ValidationError
from moto.cloudwatch.models import (
    Alarm,
    CloudWatchBackend,
    MetricAggregatedDatum,
    MetricDatum,
    MetricDatumBase,
    cloudwatch_backends,
)
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.responses import ActionResult, EmptyResult

from tandem import moto_ext
from tandem.twin.clock import TwinClock

log = logging.getLogger(__name__)

ALARM = "ALARM"
OK = "OK"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
METRIC_ALARM = "MetricAlarm"
COMPOSITE_ALARM = "CompositeAlarm"

# Attributes this module keeps on moto's own objects.
_HISTORY_ATTR = "tandem_alarm_history"  # CloudWatchBackend: list[HistoryItem], survives alarm deletion
_IMPLICIT_TS_ATTR = "tandem_implicit_timestamp"  # MetricDatumBase: True while stamped by moto in real time

_COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


# ---------------------------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class AlarmStateChange:
    """One alarm state transition, with what EventBridge's "CloudWatch Alarm State Change" event needs.

    ``timestamp``/``previous_timestamp`` are epoch seconds (emulated when the evaluator made the change).
    ``configuration`` is the alarm's configuration in the event's ``detail.configuration`` shape
    (``description`` and ``metrics`` for a metric alarm, ``alarmRule`` and suppressor settings for a composite).
    """

    region: str
    account: str
    alarm_name: str
    alarm_arn: str
    alarm_type: str
    old_state: str
    new_state: str
    reason: str
    reason_data: str | None
    timestamp: float
    previous_reason: str
    previous_reason_data: str | None
    previous_timestamp: float
    configuration: dict[str, Any] = field(default_factory=dict)


AlarmListener = Callable[[AlarmStateChange], None]


@dataclass(frozen=True)
class HistoryItem:
    """An alarm history record as DescribeAlarmHistory returns it, plus the transition it describes."""

    alarm_name: str
    alarm_arn: str
    alarm_type: str
    timestamp: datetime
    item_type: str  # StateUpdate | ConfigurationUpdate
    summary: str
    data: str
    old_state: str = ""
    old_reason: str = ""
    old_reason_data: str | None = None
    old_timestamp: datetime | None = None
    new_state: str = ""
    new_reason: str = ""
    new_reason_data: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "AlarmName": self.alarm_name,
            "AlarmType": self.alarm_type,
            "Timestamp": self.timestamp,
            "HistoryItemType": self.item_type,
            "HistorySummary": self.summary,
            "HistoryData": self.data,
        }


# ---------------------------------------------------------------------------------------------- time helpers


def _dt(epoch: float) -> datetime:
    """Epoch seconds to the naive UTC datetime moto stores."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(value: datetime) -> float:
    """A moto datetime (naive means UTC) to epoch seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _aws_time(value: datetime) -> str:
    """CloudWatch's timestamp format in reason data and events: 2019-10-02T17:04:40.989+0000."""
    utc = _dt(_epoch(value))
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def _regional_backends[B: BaseBackend](backends: BackendDict[B]) -> list[tuple[str, str, B]]:
    """A snapshot of (account, region, backend): server threads may add backends while a tick iterates."""
    return [
        (account, region, backend)
        for account, per_region in list(backends.items())
        for region, backend in list(per_region.items())
    ]


def history(backend: CloudWatchBackend) -> list[HistoryItem]:
    """The alarm history kept on a CloudWatch backend (created on first use; reset with moto's state)."""
    items: list[HistoryItem] = backend.__dict__.setdefault(_HISTORY_ATTR, [])
    return items


def alarm_type(alarm: Alarm) -> str:
    return COMPOSITE_ALARM if alarm.rule is not None else METRIC_ALARM


# ---------------------------------------------------------------------------------------------- rule language


class RuleError(ValueError):
    """An AlarmRule that does not parse."""


@dataclass(frozen=True)
class _Const:
    value: bool

    def evaluate(self, state_of: Callable[[str], str | None]) -> bool:  # noqa: ARG002 - uniform node interface
        return self.value

    def refs(self) -> list[str]:
        return []


@dataclass(frozen=True)
class _StateIs:
    state: str
    ref: str

    def evaluate(self, state_of: Callable[[str], str | None]) -> bool:
        return state_of(self.ref) == self.state

    def refs(self) -> list[str]:
        return [self.ref]


@dataclass(frozen=True)
class _Not:
    operand: _Node

    def evaluate(self, state_of: Callable[[str], str | None]) -> bool:
        return not self.operand.evaluate(state_of)

    def refs(self) -> list[str]:
        return self.operand.refs()


@dataclass(frozen=True)
class _Junction:
    op: str  # AND | OR
    operands: tuple[_Node, ...]

    def evaluate(self, state_of: Callable[[str], str | None]) -> bool:
        results = (o.evaluate(state_of) for o in self.operands)
        return all(results) if self.op == "AND" else any(results)

    def refs(self) -> list[str]:
        return [r for o in self.operands for r in o.refs()]


_Node = _Const | _StateIs | _Not | _Junction
_STATE_FUNCTIONS = (ALARM, OK, INSUFFICIENT_DATA)


class _RuleParser:
    """Recursive descent over the AlarmRule grammar; precedence NOT > AND > OR."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> _Node:
        node = self._or()
        self._skip_space()
        if self.pos != len(self.text):
            raise RuleError(f"unexpected {self.text[self.pos :]!r} in AlarmRule")
        return node

    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek_word(self) -> str:
        self._skip_space()
        match = re.compile(r"[A-Za-z_]+").match(self.text, self.pos)
        return match.group(0).upper() if match else ""

    def _take_word(self, word: str) -> bool:
        if self._peek_word() != word:
            return False
        self.pos += len(word)
        return True

    def _expect(self, char: str) -> None:
        self._skip_space()
        if not self.text.startswith(char, self.pos):
            raise RuleError(f"expected {char!r} at position {self.pos} of AlarmRule")
        self.pos += 1

    def _or(self) -> _Node:
        operands = [self._and()]
        while self._take_word("OR"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else _Junction("OR", tuple(operands))

    def _and(self) -> _Node:
        operands = [self._not()]
        while self._take_word("AND"):
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else _Junction("AND", tuple(operands))

    def _not(self) -> _Node:
        if self._take_word("NOT"):
            return _Not(self._not())
        return self._primary()

    def _primary(self) -> _Node:
        self._skip_space()
        if self.text.startswith("(", self.pos):
            self.pos += 1
            node = self._or()
            self._expect(")")
            return node
        word = self._peek_word()
        if word in ("TRUE", "FALSE"):
            self.pos += len(word)
            return _Const(word == "TRUE")
        if word in _STATE_FUNCTIONS:
            self.pos += len(word)
            self._expect("(")
            ref = self._argument()
            self._expect(")")
            return _StateIs(word, ref)
        raise RuleError(f"unexpected {self.text[self.pos :]!r} in AlarmRule")

    def _argument(self) -> str:
        self._skip_space()
        if self.text.startswith('"', self.pos):
            end = self.text.find('"', self.pos + 1)
            if end < 0:
                raise RuleError("unterminated alarm name in AlarmRule")
            ref = self.text[self.pos + 1 : end]
            self.pos = end + 1
        else:
            end = self.text.find(")", self.pos)
            if end < 0:
                raise RuleError("missing ')' in AlarmRule")
            ref = self.text[self.pos : end].strip()
            self.pos = end
        if not ref:
            raise RuleError("empty alarm name in AlarmRule")
        return ref


def parse_rule(text: str) -> _Node:
    """Parse an AlarmRule; raises :class:`RuleError`."""
    return _RuleParser(text).parse()


def _ref_name(ref: str) -> str:
    """An alarm reference (name or ARN) to the alarm name."""
    return ref.split(":alarm:", 1)[1] if ref.startswith("arn:") and ":alarm:" in ref else ref


def rule_children(alarm: Alarm) -> list[str]:
    """Names of the alarms a composite's rule references (empty when it does not parse)."""
    if alarm.rule is None:
        return []
    try:
        return [_ref_name(r) for r in parse_rule(alarm.rule).refs()]
    except RuleError:
        return []


# ---------------------------------------------------------------------------------------------- moto patches

_STATE_ATTRS = (
    "state_value",
    "state_reason",
    "state_reason_data",
    "state_updated_timestamp",
    "state_transitioned_timestamp",
    "history",
)


def _patch_put_metric_alarm() -> None:
    """New alarms start in INSUFFICIENT_DATA and updates keep the state (AWS); record configuration history."""
    original = CloudWatchBackend.put_metric_alarm

    def put_metric_alarm(self: CloudWatchBackend, *args: Any, **kwargs: Any) -> Alarm:
        name = kwargs["name"] if "name" in kwargs else args[0]
        existing = self.alarms.get(name)
        alarm = original(self, *args, **kwargs)
        if existing is not None and existing is not alarm:
            for attr in _STATE_ATTRS:
                if hasattr(existing, attr):
                    setattr(alarm, attr, getattr(existing, attr))
            verb = "updated"
        else:
            alarm.state_value = INSUFFICIENT_DATA
            alarm.state_reason = "Unchecked: Initial alarm creation"
            alarm.state_transitioned_timestamp = alarm.state_updated_timestamp  # type: ignore[attr-defined]
            verb = "created"
        history(self).append(
            HistoryItem(
                alarm_name=name,
                alarm_arn=alarm.alarm_arn,
                alarm_type=alarm_type(alarm),
                timestamp=alarm.configuration_updated_timestamp,
                item_type="ConfigurationUpdate",
                summary=f'Alarm "{name}" {verb}',
                data=json.dumps({"version": "1.0", "type": "Create" if verb == "created" else "Update"}),
            )
        )
        return alarm

    setattr(CloudWatchBackend, "put_metric_alarm", put_metric_alarm)  # noqa: B010 - mypy forbids method assignment


_original_set_alarm_state = CloudWatchBackend.set_alarm_state


def set_alarm_state(
    backend: CloudWatchBackend,
    alarm_name: str,
    reason: str,
    reason_data: str | None,
    state_value: str,
    timestamp: datetime | None = None,
) -> None:
    """moto's SetAlarmState plus what AWS also does: a history record and StateTransitionedTimestamp.

    Installed as ``CloudWatchBackend.set_alarm_state`` (so the API gets it too); the evaluator passes its
    emulated ``timestamp``.
    """
    alarm = backend.alarms.get(alarm_name)
    before = (
        (alarm.state_value, alarm.state_reason, alarm.state_reason_data, alarm.state_updated_timestamp)
        if alarm is not None
        else None
    )
    _original_set_alarm_state(backend, alarm_name, reason, reason_data, state_value)  # type: ignore[arg-type]
    alarm = backend.alarms[alarm_name]
    if timestamp is not None:
        alarm.state_updated_timestamp = timestamp
    when = alarm.state_updated_timestamp
    if before is None or before[0] == state_value:
        return
    alarm.state_transitioned_timestamp = when  # type: ignore[attr-defined]
    old_state, old_reason, old_reason_data, old_time = before
    old: dict[str, Any] = {"stateValue": old_state, "stateReason": old_reason}
    new: dict[str, Any] = {"stateValue": state_value, "stateReason": reason}
    for part, raw in ((old, old_reason_data), (new, reason_data)):
        if raw:
            with contextlib.suppress(ValueError):
                part["stateReasonData"] = json.loads(raw)
    data = {"version": "1.0", "oldState": old, "newState": new}
    history(backend).append(
        HistoryItem(
            alarm_name=alarm_name,
            alarm_arn=alarm.alarm_arn,
            alarm_type=alarm_type(alarm),
            timestamp=when,
            item_type="StateUpdate",
            summary=f"Alarm updated from {old_state} to {state_value}",
            data=json.dumps(data),
            old_state=old_state,
            old_reason=old_reason,
            old_reason_data=old_reason_data,
            old_timestamp=old_time,
            new_state=state_value,
            new_reason=reason,
            new_reason_data=reason_data,
        )
    )


def put_composite_alarm(
    backend: CloudWatchBackend,
    name: str,
    rule: str,
    description: str | None = None,
    actions_enabled: bool | None = None,
    alarm_actions: list[str] | None = None,
    ok_actions: list[str] | None = None,
    insufficient_data_actions: list[str] | None = None,
    tags: list[dict[str, str]] | None = None,
    actions_suppressor: str | None = None,
    actions_suppressor_wait_period: int | None = None,
    actions_suppressor_extension_period: int | None = None,
) -> Alarm:
    """PutCompositeAlarm: validate the rule, then store it as moto does (an Alarm with ``rule`` set)."""
    try:
        refs = parse_rule(rule).refs()
    except RuleError as exc:
        raise ValidationError(f"AlarmRule is invalid: {exc}") from exc
    missing = sorted({_ref_name(r) for r in refs} - set(backend.alarms))
    if missing:
        raise ValidationError(
            f"Could not save the composite alarm as alarms [{', '.join(missing)}] in the alarm rule do not exist"
        )
    kwargs: dict[str, Any] = {
        "name": name,
        "namespace": None,
        "metric_name": None,
        "comparison_operator": None,
        "evaluation_periods": None,
        "period": None,
        "threshold": None,
        "statistic": None,
        "description": description,
        "dimensions": [],
        "alarm_actions": alarm_actions or [],
        "ok_actions": ok_actions or [],
        "insufficient_data_actions": insufficient_data_actions or [],
        "actions_enabled": actions_enabled,
        "rule": rule,
        "tags": tags or [],
    }
    alarm: Alarm = backend.put_metric_alarm(**kwargs)
    alarm.actions_suppressor = actions_suppressor  # type: ignore[attr-defined]
    alarm.actions_suppressor_wait_period = actions_suppressor_wait_period  # type: ignore[attr-defined]
    alarm.actions_suppressor_extension_period = actions_suppressor_extension_period  # type: ignore[attr-defined]
    return alarm


def describe_alarm_history(
    backend: CloudWatchBackend,
    alarm_name: str | None = None,
    alarm_types: list[str] | None = None,
    history_item_type: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    scan_by: str | None = None,
) -> list[HistoryItem]:
    """DescribeAlarmHistory's filters; without a name, only metric alarms unless AlarmTypes says otherwise."""
    types = set(alarm_types or ([METRIC_ALARM, COMPOSITE_ALARM] if alarm_name else [METRIC_ALARM]))
    items = [
        item
        for item in list(history(backend))
        if (alarm_name is None or item.alarm_name == alarm_name)
        and item.alarm_type in types
        and (history_item_type is None or item.item_type == history_item_type)
        and (start_date is None or _epoch(item.timestamp) >= _epoch(start_date))
        and (end_date is None or _epoch(item.timestamp) <= _epoch(end_date))
    ]
    # Newest first by default; records with equal timestamps keep the order they happened in.
    ordered = sorted(enumerate(items), key=lambda pair: (_epoch(pair[1].timestamp), pair[0]))
    if scan_by != "TimestampAscending":
        ordered.reverse()
    return [item for _, item in ordered]


def _response_put_composite_alarm(self: CloudWatchResponse) -> ActionResult:
    put_composite_alarm(
        self.cloudwatch_backend,
        name=self._get_param("AlarmName"),
        rule=self._get_param("AlarmRule"),
        description=self._get_param("AlarmDescription"),
        actions_enabled=self._get_bool_param("ActionsEnabled"),
        alarm_actions=self._get_param("AlarmActions", []),
        ok_actions=self._get_param("OKActions", []),
        insufficient_data_actions=self._get_param("InsufficientDataActions", []),
        tags=self._get_param("Tags", []),
        actions_suppressor=self._get_param("ActionsSuppressor"),
        actions_suppressor_wait_period=self._get_param("ActionsSuppressorWaitPeriod"),
        actions_suppressor_extension_period=self._get_param("ActionsSuppressorExtensionPeriod"),
    )
    return EmptyResult()


def _response_describe_alarms(self: CloudWatchResponse) -> ActionResult:
    backend = self.cloudwatch_backend
    alarms = list(backend.alarms.values())
    children_of = self._get_param("ChildrenOfAlarmName")
    parents_of = self._get_param("ParentsOfAlarmName")
    default_types = [METRIC_ALARM, COMPOSITE_ALARM] if children_of or parents_of else [METRIC_ALARM]
    types = set(self._get_param("AlarmTypes") or default_types)
    if children_of:
        parent = backend.alarms.get(children_of)
        names = set(rule_children(parent)) if parent is not None else set()
        alarms = [a for a in alarms if a.name in names]
    if parents_of:
        alarms = [a for a in alarms if parents_of in rule_children(a)]
    if names_filter := self._get_param("AlarmNames", []):
        alarms = [a for a in alarms if a.name in names_filter]
    if prefix := self._get_param("AlarmNamePrefix"):
        alarms = [a for a in alarms if a.name.startswith(prefix)]
    if state := self._get_param("StateValue"):
        alarms = [a for a in alarms if a.state_value == state]
    if action_prefix := self._get_param("ActionPrefix"):
        alarms = [a for a in alarms if any(x.startswith(action_prefix) for x in a.alarm_actions)]
    return ActionResult(
        {
            "MetricAlarms": [a for a in alarms if a.rule is None] if METRIC_ALARM in types else [],
            "CompositeAlarms": [a for a in alarms if a.rule is not None] if COMPOSITE_ALARM in types else [],
        }
    )


def _response_describe_alarm_history(self: CloudWatchResponse) -> ActionResult:
    items = describe_alarm_history(
        self.cloudwatch_backend,
        alarm_name=self._get_param("AlarmName"),
        alarm_types=self._get_param("AlarmTypes"),
        history_item_type=self._get_param("HistoryItemType"),
        start_date=self._get_param("StartDate"),
        end_date=self._get_param("EndDate"),
        scan_by=self._get_param("ScanBy"),
    )
    start = int(self._get_param("NextToken") or 0)
    size = int(self._get_param("MaxRecords") or 100)
    page = items[start : start + size]
    result: dict[str, Any] = {"AlarmHistoryItems": [i.describe() for i in page]}
    if start + size < len(items):
        result["NextToken"] = str(start + size)
    return ActionResult(result)


def _patch_metric_datum() -> None:
    """Mark datapoints moto stamps itself (real time), so the evaluator can re-stamp them in emulated time."""
    original = MetricDatumBase.__init__

    def __init__(self: MetricDatumBase, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        timestamp = kwargs["timestamp"] if "timestamp" in kwargs else (args[3] if len(args) > 3 else None)
        setattr(self, _IMPLICIT_TS_ATTR, timestamp is None)

    setattr(MetricDatumBase, "__init__", __init__)  # noqa: B010 - mypy forbids method assignment


@functools.cache
def install() -> None:
    """Install the CloudWatch API fixes into moto (idempotent). See the module docstring."""
    moto_ext.apply()
    _patch_put_metric_alarm()
    _patch_metric_datum()
    setattr(CloudWatchBackend, "set_alarm_state", set_alarm_state)  # noqa: B010
    setattr(CloudWatchBackend, "put_composite_alarm", put_composite_alarm)  # noqa: B010
    setattr(CloudWatchBackend, "describe_alarm_history", describe_alarm_history)  # noqa: B010
    setattr(CloudWatchResponse, "put_composite_alarm", _response_put_composite_alarm)  # noqa: B010
    setattr(CloudWatchResponse, "describe_alarms", _response_describe_alarms)  # noqa: B010
    setattr(CloudWatchResponse, "describe_alarm_history", _response_describe_alarm_history)  # noqa: B010


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class _Window:
    start: float
    values: list[float] = field(default_factory=list)
    sets: list[MetricAggregatedDatum] = field(default_factory=list)

    def statistic(self, alarm: Alarm) -> float | None:
        """The alarm's statistic over this window; None when it cannot be computed (missing datapoint)."""
        count = len(self.values) + sum(s.sample_count for s in self.sets)
        if count == 0:
            return None
        if alarm.extended_statistic:
            match = _PERCENTILE.match(alarm.extended_statistic)
            if not match or not self.values:
                return None
            ranked = sorted(self.values)
            rank = max(1, math.ceil(float(match.group(1)) / 100 * len(ranked)))
            return ranked[rank - 1]
        total = sum(self.values) + sum(s.sum for s in self.sets)
        stat = alarm.statistic
        if stat == "SampleCount":
            return float(count)
        if stat == "Sum":
            return total
        if stat == "Average":
            return total / count
        if stat == "Minimum":
            return min([*self.values, *(s.min for s in self.sets)])
        if stat == "Maximum":
            return max([*self.values, *(s.max for s in self.sets)])
        return None


def _evaluable(alarm: Alarm) -> bool:
    """Alarms this evaluator decides (see the module docstring for those it leaves alone)."""
    if alarm.rule is not None or alarm.metric_data_queries or alarm.comparison_operator not in _COMPARISONS:
        return False
    if not alarm.period or not alarm.evaluation_periods or alarm.threshold is None:
        return False
    if alarm.extended_statistic:
        return bool(_PERCENTILE.match(alarm.extended_statistic))
    return alarm.statistic in ("SampleCount", "Average", "Sum", "Minimum", "Maximum")


def _windows(alarm: Alarm, series: Iterable[MetricDatumBase], now: float) -> list[_Window]:
    """The alarm's evaluation range, most recent window first."""
    period = float(alarm.period)
    count = int(alarm.evaluation_periods)
    windows = [_Window(start=now - (k + 1) * period) for k in range(count)]
    wanted = sorted((d.name or "", d.value or "") for d in alarm.dimensions)
    for datum in series:
        age = now - _epoch(datum.timestamp)
        if age < 0 or age >= count * period:
            continue
        if alarm.unit and datum.unit != alarm.unit:
            continue
        if sorted((d.name or "", d.value or "") for d in datum.dimensions) != wanted:
            continue
        window = windows[int(age // period)]
        if isinstance(datum, MetricDatum):
            window.values.append(datum.value)
        elif isinstance(datum, MetricAggregatedDatum):
            window.sets.append(datum)
    return windows


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def evaluate_metric_alarm(alarm: Alarm, series: Iterable[MetricDatumBase], now: float) -> tuple[str, str, str] | None:
    """(state, reason, reason data JSON) the alarm should be in at ``now``; None keeps the current state."""
    if not _evaluable(alarm):
        return None
    compare, words = _COMPARISONS[alarm.comparison_operator]
    threshold = float(alarm.threshold)
    n = int(alarm.evaluation_periods)
    m = int(alarm.datapoints_to_alarm or n)
    windows = _windows(alarm, series, now)
    values = [w.statistic(alarm) for w in windows]
    present = [v for v in values if v is not None]
    breaching = sum(1 for v in present if compare(v, threshold))
    missing = n - len(present)
    treat = "ignore" if alarm.namespace == "AWS/DynamoDB" else (alarm.treat_missing_data or "missing")

    state: str | None
    if treat == "breaching":
        state = ALARM if breaching + missing >= m else OK
    elif treat == "notBreaching":
        state = ALARM if breaching >= m else OK
    elif not present:
        state = INSUFFICIENT_DATA if treat == "missing" else None
    elif breaching >= m:
        state = ALARM
    elif len(present) < m and breaching == len(present):
        state = ALARM if treat == "missing" else None
    else:
        state = OK
    if state is None:
        return None

    stat = alarm.extended_statistic or alarm.statistic
    shown = [(v, w.start) for v, w in zip(values, windows, strict=True) if v is not None]
    listed = ", ".join(f"{v} ({_dt(start).strftime('%d/%m/%y %H:%M:%S')})" for v, start in shown)
    if state == INSUFFICIENT_DATA:
        reason = f"Insufficient Data: {_plural(n, 'datapoint')} {'was' if n == 1 else 'were'} unknown."
    elif not present:
        treated = "Breaching" if treat == "breaching" else "NonBreaching"
        reason = (
            f"Threshold Crossed: no datapoints were received for {_plural(n, 'period')} and "
            f"{_plural(missing, 'missing datapoint')} {'was' if missing == 1 else 'were'} treated as [{treated}]."
        )
    else:
        counted = breaching if state == ALARM else len(present) - breaching
        verb = ("was" if counted == 1 else "were") + ("" if state == ALARM else " not")
        transition = "OK -> ALARM" if state == ALARM else "ALARM -> OK"
        reason = (
            f"Threshold Crossed: {counted} out of the last {len(present)} datapoints [{listed}] {verb} {words} "
            f"the threshold ({threshold}) (minimum {_plural(m, 'datapoint')} for {transition} transition)."
        )
        if missing and treat in ("breaching", "notBreaching"):
            treated = "Breaching" if treat == "breaching" else "NonBreaching"
            reason = reason[:-1] + f" {_plural(missing, 'missing datapoint')} treated as [{treated}]."
    data = {
        "version": "1.0",
        "queryDate": _aws_time(_dt(now)),
        "startDate": _aws_time(_dt(windows[-1].start)),
        "statistic" if alarm.statistic else "extendedStatistic": stat,
        "period": int(alarm.period),
        "recentDatapoints": [v for v, _ in shown],
        "threshold": threshold,
        "evaluatedDatapoints": [{"timestamp": _aws_time(_dt(start)), "value": v} for v, start in shown],
    }
    return state, reason, json.dumps(data)


def alarm_configuration(alarm: Alarm) -> dict[str, Any]:
    """The alarm as the EventBridge event's ``detail.configuration`` describes it."""
    config: dict[str, Any] = {}
    if alarm.description:
        config["description"] = alarm.description
    if alarm.rule is not None:
        config["alarmRule"] = alarm.rule
        for key, attr in (
            ("actionsSuppressor", "actions_suppressor"),
            ("actionsSuppressorWaitPeriod", "actions_suppressor_wait_period"),
            ("actionsSuppressorExtensionPeriod", "actions_suppressor_extension_period"),
        ):
            if getattr(alarm, attr, None) is not None:
                config[key] = getattr(alarm, attr)
        return config
    if alarm.metric_data_queries:
        metrics = []
        for query in alarm.metric_data_queries:
            entry: dict[str, Any] = {"id": query.id, "returnData": bool(query.return_data)}
            if query.label:
                entry["label"] = query.label
            if query.expression:
                entry["expression"] = query.expression
            if query.metric_stat is not None:
                stat = query.metric_stat
                entry["metricStat"] = {
                    "metric": {
                        "namespace": stat.metric.namespace,
                        "name": stat.metric.metric_name,
                        "dimensions": {d.name: d.value for d in stat.metric.dimensions},
                    },
                    "period": int(stat.period) if stat.period else None,
                    "stat": stat.stat,
                }
            metrics.append(entry)
        config["metrics"] = metrics
        return config
    config["metrics"] = [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, alarm.alarm_arn)),
            "metricStat": {
                "metric": {
                    "namespace": alarm.namespace,
                    "name": alarm.metric_name,
                    "dimensions": {d.name: d.value for d in alarm.dimensions},
                },
                "period": int(alarm.period) if alarm.period else None,
                "stat": alarm.extended_statistic or alarm.statistic,
            },
            "returnData": True,
        }
    ]
    return config


_REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-central-1": "EU (Frankfurt)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
}


class AlarmEvaluator:
    """Evaluates alarms on the twin clock and reports state changes (see the module docstring).

    ``is_region_up(region)`` lets the twin freeze a region in an outage: its alarms are neither evaluated
    nor reported until it is up again. ``sns_actions`` publishes to SNS topics named in the alarm actions of
    alarms with ActionsEnabled.
    """

    def __init__(
        self,
        clock: TwinClock,
        *,
        is_region_up: Callable[[str], bool] | None = None,
        sns_actions: bool = True,
    ) -> None:
        install()
        self.clock = clock
        self._is_region_up = is_region_up or (lambda _region: True)
        self._sns_actions = sns_actions
        self._listeners: list[AlarmListener] = []
        # (account, region) -> (the backend's list we read, how far); a new list means moto was reset.
        self._history_read: dict[tuple[str, str], tuple[list[HistoryItem], int]] = {}
        self._data_read: dict[tuple[str, str], tuple[list[MetricDatumBase], int]] = {}

    def add_listener(self, listener: AlarmListener) -> None:
        self._listeners.append(listener)

    def tick_now(self) -> None:
        self.tick(self.clock.now())

    def tick(self, now: float) -> None:
        for account, region, backend in _regional_backends(cloudwatch_backends):
            if not self._is_region_up(region):
                continue
            self._restamp(account, region, backend, now)
            series: dict[tuple[str, str], list[MetricDatumBase]] = {}
            for datum in list(backend.metric_data):
                series.setdefault((datum.namespace, datum.name), []).append(datum)
            for alarm in list(backend.alarms.values()):
                if alarm.rule is None:
                    self._apply(backend, alarm, series.get((alarm.namespace, alarm.metric_name), []), now)
            self._evaluate_composites(backend, now)
            self._report(account, region, backend)

    def _restamp(self, account: str, region: str, backend: CloudWatchBackend, now: float) -> None:
        data = backend.metric_data
        seen_list, seen = self._data_read.get((account, region), (data, 0))
        start = seen if seen_list is data else 0
        for datum in data[start:]:
            if getattr(datum, _IMPLICIT_TS_ATTR, False):
                datum.timestamp = _dt(min(now, self.clock.to_emulated(_epoch(datum.timestamp))))
                setattr(datum, _IMPLICIT_TS_ATTR, False)
        self._data_read[(account, region)] = (data, len(data))

    def _apply(self, backend: CloudWatchBackend, alarm: Alarm, series: list[MetricDatumBase], now: float) -> None:
        result = evaluate_metric_alarm(alarm, series, now)
        if result is not None and result[0] != alarm.state_value:
            state, reason, data = result
            set_alarm_state(backend, alarm.name, reason, data, state, timestamp=_dt(now))

    def _evaluate_composites(self, backend: CloudWatchBackend, now: float) -> None:
        composites = {a.name: a for a in list(backend.alarms.values()) if a.rule is not None}
        order: list[str] = []
        status: dict[str, str] = {}  # visiting | done | cycle

        def visit(name: str) -> bool:
            """Depth-first, children first; False when the alarm sits on a cycle."""
            if status.get(name) == "done":
                return True
            if status.get(name) in ("visiting", "cycle"):
                status[name] = "cycle"
                return False
            status[name] = "visiting"
            ok = all(visit(child) for child in rule_children(composites[name]) if child in composites)
            if status[name] == "cycle" or not ok:
                status[name] = "cycle"
                return False
            status[name] = "done"
            order.append(name)
            return True

        for name in composites:
            visit(name)

        def state_of(ref: str) -> str | None:
            alarm = backend.alarms.get(_ref_name(ref))
            return alarm.state_value if alarm is not None else None

        for name in order:
            alarm = composites[name]
            try:
                node = parse_rule(alarm.rule or "")
            except RuleError:
                continue
            state = ALARM if node.evaluate(state_of) else OK
            if state == alarm.state_value:
                continue
            children = [backend.alarms[c] for c in dict.fromkeys(rule_children(alarm)) if c in backend.alarms]
            latest = max(children, key=lambda c: _epoch(c.state_updated_timestamp), default=None)
            if latest is not None:
                when = _dt(_epoch(latest.state_updated_timestamp)).strftime("%A %d %B, %Y %H:%M:%S UTC")
                reason = f"{latest.alarm_arn} transitioned to {latest.state_value} at {when}"
            else:
                reason = f"AlarmRule evaluated to {state == ALARM}"
            data = {
                "triggeringAlarms": [
                    {
                        "arn": c.alarm_arn,
                        "state": {"value": c.state_value, "timestamp": _aws_time(c.state_updated_timestamp)},
                    }
                    for c in children
                ]
            }
            set_alarm_state(backend, name, reason, json.dumps(data), state, timestamp=_dt(now))

    def _report(self, account: str, region: str, backend: CloudWatchBackend) -> None:
        items = history(backend)
        read_list, read = self._history_read.get((account, region), (items, 0))
        start = read if read_list is items else 0
        end = len(items)
        self._history_read[(account, region)] = (items, end)
        for item in items[start:end]:
            if item.item_type != "StateUpdate":
                continue
            alarm = backend.alarms.get(item.alarm_name)
            change = AlarmStateChange(
                region=region,
                account=account,
                alarm_name=item.alarm_name,
                alarm_arn=item.alarm_arn,
                alarm_type=item.alarm_type,
                old_state=item.old_state,
                new_state=item.new_state,
                reason=item.new_reason,
                reason_data=item.new_reason_data,
                timestamp=_epoch(item.timestamp),
                previous_reason=item.old_reason,
                previous_reason_data=item.old_reason_data,
                previous_timestamp=_epoch(item.old_timestamp) if item.old_timestamp else _epoch(item.timestamp),
                configuration=alarm_configuration(alarm) if alarm is not None else {},
            )
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    log.exception("alarm listener failed for %s", item.alarm_arn)
            if alarm is not None and self._sns_actions:
                self._publish(alarm, change)

    def _publish(self, alarm: Alarm, change: AlarmStateChange) -> None:
        """Alarm actions that are SNS topics, with the message CloudWatch sends them."""
        if not alarm.actions_enabled:
            return
        actions = {
            ALARM: alarm.alarm_actions,
            OK: alarm.ok_actions,
            INSUFFICIENT_DATA: alarm.insufficient_data_actions,
        }.get(change.new_state, [])
        topics = [a for a in actions or [] if a.startswith("arn:") and a.split(":")[2:3] == ["sns"]]
        if not topics:
            return
        from moto.sns.models import sns_backends

        region_name = _REGION_NAMES.get(change.region, change.region)
        message: dict[str, Any] = {
            "AlarmName": change.alarm_name,
            "AlarmDescription": alarm.description,
            "AWSAccountId": change.account,
            "AlarmConfigurationUpdatedTimestamp": _aws_time(alarm.configuration_updated_timestamp),
            "NewStateValue": change.new_state,
            "NewStateReason": change.reason,
            "StateChangeTime": _aws_time(_dt(change.timestamp)),
            "Region": region_name,
            "AlarmArn": change.alarm_arn,
            "OldStateValue": change.old_state,
            "OKActions": alarm.ok_actions,
            "AlarmActions": alarm.alarm_actions,
            "InsufficientDataActions": alarm.insufficient_data_actions,
        }
        if alarm.rule is not None:
            message["AlarmRule"] = alarm.rule
        else:
            message["Trigger"] = {
                "MetricName": alarm.metric_name,
                "Namespace": alarm.namespace,
                "StatisticType": "ExtendedStatistic" if alarm.extended_statistic else "Statistic",
                "Statistic": (alarm.extended_statistic or alarm.statistic or "").upper(),
                "Unit": alarm.unit,
                "Dimensions": [{"name": d.name, "value": d.value} for d in alarm.dimensions],
                "Period": alarm.period,
                "EvaluationPeriods": alarm.evaluation_periods,
                "DatapointsToAlarm": alarm.datapoints_to_alarm or alarm.evaluation_periods,
                "ComparisonOperator": alarm.comparison_operator,
                "Threshold": alarm.threshold,
                "TreatMissingData": alarm.treat_missing_data or "missing",
                "EvaluateLowSampleCountPercentile": alarm.evaluate_low_sample_count_percentile or "",
            }
        subject = f'{change.new_state}: "{change.alarm_name}" in {region_name}'[:100]
        for topic in topics:
            _, _, _, topic_region, topic_account, _ = topic.split(":", 5)
            try:
                sns_backends[topic_account][topic_region].publish(json.dumps(message), arn=topic, subject=subject)
            except Exception:
                log.exception("alarm action %s failed for %s", topic, change.alarm_arn)


__all__ = [
    "ALARM",
    "COMPOSITE_ALARM",
    "INSUFFICIENT_DATA",
    "METRIC_ALARM",
    "OK",
    "AlarmEvaluator",
    "AlarmListener",
    "AlarmStateChange",
    "HistoryItem",
    "RuleError",
    "alarm_configuration",
    "describe_alarm_history",
    "evaluate_metric_alarm",
    "history",
    "install",
    "parse_rule",
    "put_composite_alarm",
    "set_alarm_state",
]
