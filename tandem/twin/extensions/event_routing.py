"""EventBridge delivery and the SQS event source mapping, run by the twin instead of moto.

moto 5.2.5 stores EventBridge rules and Lambda event source mappings but delivers nothing the twin needs: no
CloudWatch alarm events, no schedules, and an enabled SQS mapping makes moto consume the queue itself on every
``SendMessage`` (starting Docker to invoke the function, or, with ``use_docker: False``, draining it). Here:

- :class:`EventRouter` turns :class:`~tandem.twin.extensions.cloudwatch_alarms.AlarmStateChange` into the
  "CloudWatch Alarm State Change" event AWS puts on the region's default bus (register
  ``router.on_alarm_state_change`` with ``AlarmEvaluator.add_listener``), matches it against the ENABLED
  rules' ``EventPattern`` with moto's own matcher (``moto.events.models.EventPattern``: exact values, prefix,
  suffix, anything-but, exists, numeric, equals-ignore-case, wildcard, cidr, ``$or``; it does not descend
  into arrays of objects), and hands each matching target to ``invoker(region, target_arn, payload)``;
  ``Input``, ``InputPath`` and ``InputTransformer`` shape the payload as AWS does. Its ``tick(now)`` fires
  ENABLED ``rate(...)`` and ``cron(...)`` rules as "Scheduled Event"s. No retries and no DLQ: a target
  failure is logged (the invoker decides how to run the function, e.g. asynchronously).
- :class:`SqsPoller` ``tick(now)`` is Lambda's SQS poller: for every *Enabled* SQS mapping (read from moto's
  Lambda backends on every tick, so ``UpdateEventSourceMapping(Enabled=False)`` stops it) it receives up to
  ``BatchSize`` messages, builds the event Lambda sends, calls ``invoker(region, function_arn, event)``,
  deletes what succeeded and leaves the rest for redelivery (SQS and the queue's RedrivePolicy then move them
  to the DLQ after ``maxReceiveCount`` receives, as in AWS).
- :func:`install` stops moto consuming queues itself (see :func:`_stop_moto_consuming_queues`).

Visibility timeout and the compressed clock: moto's SQS runs on real time (``visible_at`` in real
milliseconds; ``ChangeMessageVisibility`` in whole seconds). The poller keeps a received batch invisible while
the function runs, then makes each failed record visible again ``VisibilityTimeout`` *emulated* seconds after
it was received (``clock.real_seconds``, with sub-second precision, by setting moto's ``Message.visible_at``),
which is when Lambda would see it again. ``failure_visibility`` overrides that delay (emulated seconds; 0 =
at once, as the drill does). Other clients' receives through the API keep moto's real-second semantics.
``MaximumBatchingWindowInSeconds`` and ``ScalingConfig`` are not modelled (one batch at a time, up to
``max_batches_per_tick`` batches per mapping per tick); FIFO queues keep moto's message-group locking, but a
failed record does not hold back the rest of its group's batch. Filter criteria are not applied.
"""

from __future__ import annotations

import base64
import calendar
import functools
import json
import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.awslambda.models import EventSourceMapping, LambdaBackend, lambda_backends
from moto.awslambda_simple.models import lambda_simple_backends
from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.utils import unix_time_millis
from moto.events.models import Rule, events_backends
from moto.sqs.models import Message, Queue, SQSBackend, sqs_backends

from tandem import moto_ext
from tandem.twin.clock import TwinClock
from tandem.twin.extensions.cloudwatch_alarms import AlarmStateChange

log = logging.getLogger(__name__)

TargetInvoker = Callable[[str, str, Any], None]
"""(region, target ARN, payload): deliver one EventBridge target invocation."""
FunctionInvoker = Callable[[str, str, dict[str, Any]], Any]
"""(region, function ARN, event) -> the function's response; raises when the invocation failed."""

ENABLED_STATES = ("ENABLED", "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS")


def _regional_backends[B: BaseBackend](backends: BackendDict[B]) -> list[tuple[str, str, B]]:
    """A snapshot of (account, region, backend): server threads may add backends while a tick iterates."""
    return [
        (account, region, backend)
        for account, per_region in list(backends.items())
        for region, backend in list(per_region.items())
    ]


def _iso(epoch: float) -> str:
    """EventBridge's envelope time: 2019-10-02T17:04:40Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cw_time(epoch: float) -> str:
    """CloudWatch's detail timestamps: 2019-10-02T17:04:40.989+0000."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


# ---------------------------------------------------------------------------------------------- moto patches


def _stop_moto_consuming_queues() -> None:
    """Make every queue's view of its Lambda mappings permanently empty.

    moto reads ``Queue.lambda_event_source_mappings`` only to consume the queue itself in ``add_message`` (and
    writes it when a mapping is created); the Lambda backend keeps the mappings the API lists, gets and
    updates in its own registry, which the poller reads. A data descriptor on the class wins over the
    attribute moto sets on each instance, so this covers queues created before and after install.
    """

    def mappings(_queue: Queue) -> dict[str, EventSourceMapping]:
        return {}

    def ignore(_queue: Queue, _value: object) -> None:
        return None

    setattr(Queue, "lambda_event_source_mappings", property(mappings, ignore))  # noqa: B010


@functools.cache
def install() -> None:
    """Install into moto (idempotent): moto never consumes an SQS queue for a Lambda mapping."""
    moto_ext.apply()
    _stop_moto_consuming_queues()


# ---------------------------------------------------------------------------------------------- event shapes


def alarm_state_change_event(change: AlarmStateChange, event_id: str | None = None) -> dict[str, Any]:
    """The event CloudWatch puts on the default bus when an alarm changes state."""

    def state(value: str, reason: str, reason_data: str | None, at: float) -> dict[str, Any]:
        part: dict[str, Any] = {"value": value, "reason": reason}
        if reason_data:
            part["reasonData"] = reason_data
        part["timestamp"] = _cw_time(at)
        return part

    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": change.account,
        "time": _iso(change.timestamp),
        "region": change.region,
        "resources": [change.alarm_arn],
        "detail": {
            "alarmName": change.alarm_name,
            "state": state(change.new_state, change.reason, change.reason_data, change.timestamp),
            "previousState": state(
                change.old_state, change.previous_reason, change.previous_reason_data, change.previous_timestamp
            ),
            "configuration": change.configuration,
        },
    }


def scheduled_event(rule: Rule, at: float, event_id: str | None = None) -> dict[str, Any]:
    """The event EventBridge sends a scheduled rule's targets."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": rule.account_id,
        "time": _iso(at),
        "region": rule.region_name,
        "resources": [rule.arn],
        "detail": {},
    }


_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def json_path(document: Any, path: str) -> Any:
    """EventBridge's JSONPath subset for InputPath / InputPathsMap: ``$``, ``$.a.b``, ``$.a[0]``; None if absent."""
    if not path.startswith("$"):
        raise ValueError(f"unsupported JSONPath {path!r}")
    value = document
    for name, index in _PATH_STEP.findall(path[1:]):
        if name and isinstance(value, dict):
            value = value.get(name)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def target_payload(target: dict[str, Any], event: dict[str, Any], rule: Rule) -> Any:
    """What the target receives: the event, or its Input / InputPath / InputTransformer rendering."""
    if target.get("Input") is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        return json_path(event, target["InputPath"])
    transformer = target.get("InputTransformer")
    if not transformer:
        return event
    text: str = transformer["InputTemplate"]
    values: dict[str, Any] = {
        key: json_path(event, path) for key, path in (transformer.get("InputPathsMap") or {}).items()
    }
    values.update(
        {
            "aws.events.rule-arn": rule.arn,
            "aws.events.rule-name": rule.name,
            "aws.events.event.ingestion-time": event["time"],
            "aws.events.event.json": event,
        }
    )
    for key, value in values.items():
        # A quoted placeholder becomes a JSON value; a bare one inside text takes a string as is.
        text = text.replace(f'"<{key}>"', json.dumps(value))
        text = text.replace(f"<{key}>", value if isinstance(value, str) else json.dumps(value))
    try:
        return json.loads(text)
    except ValueError:
        return text  # AWS allows plain-text templates


# ---------------------------------------------------------------------------------------------- schedules

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def rate_seconds(expression: str) -> float | None:
    """Seconds between firings of ``rate(N unit)``; None when it is not a rate expression."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int] | None:
    """The values a cron field allows; None for ``?`` (no constraint). L, W and # are not supported."""
    if text == "?":
        return None
    allowed: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = names.get(a.upper()) or int(a), names.get(b.upper()) or int(b)
        else:
            start = names.get(base.upper()) or int(base)
            end = high if step_text else start  # "5/10": from 5, every 10
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"cron value out of range in {text!r}")
        allowed.update(range(start, end + 1, step))
    return frozenset(allowed)


@dataclass(frozen=True)
class Cron:
    """An EventBridge ``cron(min hour day-of-month month day-of-week year)`` in UTC."""

    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 1 = Sunday, as AWS
    years: frozenset[int] | None

    @classmethod
    def parse(cls, expression: str) -> Cron:
        match = re.match(r"^cron\((.*)\)$", expression.strip())
        if not match:
            raise ValueError(f"not a cron expression: {expression!r}")
        fields = match.group(1).split()
        if len(fields) != 6:
            raise ValueError(f"cron needs 6 fields: {expression!r}")
        if re.search(r"[LW#]", fields[2].upper()) or re.search(r"[L#]", fields[4].upper()):
            raise ValueError(f"L, W and # are not supported by the twin: {expression!r}")
        return cls(
            minutes=_cron_field(fields[0], 0, 59, {}),
            hours=_cron_field(fields[1], 0, 23, {}),
            days=_cron_field(fields[2], 1, 31, {}),
            months=_cron_field(fields[3], 1, 12, _MONTHS),
            weekdays=_cron_field(fields[4], 1, 7, _DAYS),
            years=_cron_field(fields[5], 1970, 2199, {}),
        )

    def matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7 + 1
        return all(
            allowed is None or value in allowed
            for allowed, value in (
                (self.minutes, moment.minute),
                (self.hours, moment.hour),
                (self.days, moment.day),
                (self.months, moment.month),
                (self.weekdays, weekday),
                (self.years, moment.year),
            )
        )

    def latest(self, after: float, until: float) -> float | None:
        """The latest matching minute in (after, until], looking back at most one day."""
        start = max(after, until - 86400)
        minute = datetime.fromtimestamp(math.floor(until / 60) * 60, UTC)
        while minute.timestamp() > start:
            if self.matches(minute):
                return minute.timestamp()
            minute -= timedelta(minutes=1)
        return None


@dataclass
class _Schedule:
    expression: str
    rate: float | None
    cron: Cron | None
    due: float  # rate: next firing time; cron: last time looked at


# ---------------------------------------------------------------------------------------------- the router


class EventRouter:
    """EventBridge's delivery in the twin: alarm state changes and schedules to rule targets.

    ``is_region_up(region)`` lets the twin silence a region in an outage (no deliveries, no schedules).
    Schedules: ``rate(N unit)`` first fires one interval after the tick that first sees the rule, then every
    interval; ``cron(...)`` fires on matching UTC minutes. A tick fires each due rule at most once (missed
    firings are coalesced, like a late timer), and a disabled rule's missed firings are skipped.
    """

    def __init__(
        self, invoker: TargetInvoker, clock: TwinClock, *, is_region_up: Callable[[str], bool] | None = None
    ) -> None:
        install()
        self.invoker = invoker
        self.clock = clock
        self._is_region_up = is_region_up or (lambda _region: True)
        self._schedules: dict[str, _Schedule] = {}
        self._bad_expressions: set[str] = set()

    def on_alarm_state_change(self, change: AlarmStateChange) -> None:
        """Listener for ``AlarmEvaluator.add_listener``."""
        self.route(change.account, change.region, alarm_state_change_event(change))

    def route(self, account: str, region: str, event: dict[str, Any], bus: str = "default") -> list[str]:
        """Deliver ``event`` to the targets of the bus's matching ENABLED rules; the target ARNs invoked."""
        if not self._is_region_up(region):
            return []
        backend = events_backends[account][region]
        event_bus = backend.event_buses.get(bus)
        if event_bus is None:
            return []
        delivered: list[str] = []
        for rule in list(event_bus.rules.values()):
            if rule.state not in ENABLED_STATES or not rule.event_pattern.get_pattern():
                continue  # schedule-only rules have no pattern, and moto's empty pattern matches everything
            if rule.event_pattern.matches_event(event):  # type: ignore[arg-type]
                delivered += self._deliver(rule, event)
        return delivered

    def tick_now(self) -> None:
        self.tick(self.clock.now())

    def tick(self, now: float) -> None:
        seen: set[str] = set()
        for _account, region, backend in _regional_backends(events_backends):
            bus = backend.event_buses.get("default")
            if bus is None:
                continue
            for rule in list(bus.rules.values()):
                if rule.scheduled_expression:
                    seen.add(rule.arn)
                    self._tick_rule(rule, now, active=self._is_region_up(region))
        for arn in set(self._schedules) - seen:
            del self._schedules[arn]

    def _tick_rule(self, rule: Rule, now: float, active: bool) -> None:
        expression = rule.scheduled_expression or ""
        schedule = self._schedules.get(rule.arn)
        if schedule is None or schedule.expression != expression:
            schedule = self._new_schedule(expression, now)
            if schedule is None:
                return
            self._schedules[rule.arn] = schedule
            return
        enabled = active and rule.state in ENABLED_STATES
        fire_at: float | None = None
        if schedule.rate is not None:
            if now >= schedule.due:
                fire_at = schedule.due + math.floor((now - schedule.due) / schedule.rate) * schedule.rate
                schedule.due = fire_at + schedule.rate
        elif schedule.cron is not None:
            fire_at = schedule.cron.latest(schedule.due, now)
            schedule.due = now
        if fire_at is not None and enabled:
            self._deliver(rule, scheduled_event(rule, fire_at))

    def _new_schedule(self, expression: str, now: float) -> _Schedule | None:
        rate = rate_seconds(expression)
        if rate is not None:
            return _Schedule(expression, rate, None, now + rate)
        try:
            return _Schedule(expression, None, Cron.parse(expression), now)
        except ValueError as exc:
            if expression not in self._bad_expressions:
                self._bad_expressions.add(expression)
                log.warning("schedule %r will not fire in the twin: %s", expression, exc)
            return None

    def _deliver(self, rule: Rule, event: dict[str, Any]) -> list[str]:
        delivered = []
        for target in list(rule.targets):
            try:
                self.invoker(rule.region_name, target["Arn"], target_payload(target, event, rule))
                delivered.append(target["Arn"])
            except Exception:
                log.exception("EventBridge target %s of rule %s failed", target.get("Arn"), rule.arn)
        return delivered


# ---------------------------------------------------------------------------------------------- SQS -> Lambda


def _message_attributes(message: Message) -> dict[str, Any]:
    """SQS message attributes in the Lambda event's shape (camelCase, list fields present)."""
    result: dict[str, Any] = {}
    for name, attr in message.message_attributes.items():
        entry: dict[str, Any] = {}
        if attr.get("StringValue") is not None:
            entry["stringValue"] = attr["StringValue"]
        if attr.get("BinaryValue") is not None:
            raw = attr["BinaryValue"]
            entry["binaryValue"] = base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
        entry["stringListValues"] = list(attr.get("StringListValues") or [])
        entry["binaryListValues"] = list(attr.get("BinaryListValues") or [])
        entry["dataType"] = attr.get("DataType", "String")
        result[name] = entry
    return result


def sqs_record(message: Message, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the event Lambda's SQS poller delivers (the shape of the files in ``events/``)."""
    attributes: dict[str, Any] = {
        "ApproximateReceiveCount": str(message.approximate_receive_count),
        "SentTimestamp": str(message.sent_timestamp),
        "SenderId": message.sender_id,
        "ApproximateFirstReceiveTimestamp": str(message.approximate_first_receive_timestamp),
    }
    trace = (message.system_attributes or {}).get("AWSTraceHeader")
    if trace:
        attributes["AWSTraceHeader"] = trace.get("StringValue") if isinstance(trace, dict) else str(trace)
    if message.sequence_number is not None:
        attributes["SequenceNumber"] = message.sequence_number
    if message.group_id is not None:
        attributes["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        attributes["MessageDeduplicationId"] = message.deduplication_id
    record: dict[str, Any] = {
        "messageId": message.id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": _message_attributes(message),
        "md5OfBody": message.body_md5,
    }
    if message.message_attributes:
        record["md5OfMessageAttributes"] = message.attribute_md5
    record.update({"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region})
    return record


def failed_message_ids(response: Any, message_ids: list[str], report_batch_item_failures: bool) -> set[str]:
    """Which records failed, as Lambda reads a successful invocation's response.

    Without ReportBatchItemFailures every record succeeded. With it: no response, an empty response or an
    empty/null ``batchItemFailures`` is complete success; a malformed response, or an ``itemIdentifier``
    that is empty or not in the batch, fails the whole batch (AWS's rules).
    """
    if not report_batch_item_failures or response is None:
        return set()
    if not isinstance(response, dict):
        return set(message_ids)
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(item, str) or item not in message_ids:
            return set(message_ids)
        failed.add(item)
    return failed


def _lambda_backends() -> list[tuple[str, str, LambdaBackend]]:
    """Both of moto's Lambda backend families (``use_docker: False`` switches to the "simple" one)."""
    simple = _regional_backends(lambda_simple_backends)
    full = _regional_backends(lambda_backends)
    return [*full, *simple]


class SqsPoller:
    """Lambda's SQS event source mapping, on the twin clock (see the module docstring).

    ``invoker(region, function_arn, event)`` runs the function and returns its response, raising when the
    invocation failed. ``failure_visibility`` (emulated seconds) overrides how long a failed record stays
    invisible (default: the queue's VisibilityTimeout, counted from the receive). ``is_region_up(region)``
    stops a region's pollers in an outage without touching its mappings.
    """

    def __init__(
        self,
        invoker: FunctionInvoker,
        clock: TwinClock,
        *,
        max_batches_per_tick: int = 10,
        failure_visibility: float | None = None,
        is_region_up: Callable[[str], bool] | None = None,
    ) -> None:
        install()
        self.invoker = invoker
        self.clock = clock
        self.max_batches_per_tick = max_batches_per_tick
        self.failure_visibility = failure_visibility
        self._is_region_up = is_region_up or (lambda _region: True)

    def tick_now(self) -> None:
        self.tick(self.clock.now())

    def tick(self, now: float) -> None:  # noqa: ARG002 - visibility runs on moto's real clock, see the docstring
        for _account, region, backend in _lambda_backends():
            if not self._is_region_up(region):
                continue
            for mapping in list(backend.list_event_source_mappings("", "")):
                if mapping.enabled and mapping.event_source_arn.split(":")[2] == "sqs":
                    self._poll(mapping)

    def _poll(self, mapping: EventSourceMapping) -> None:
        _, _, _, region, account, queue_name = mapping.event_source_arn.split(":", 5)
        sqs = sqs_backends[account][region]
        queue = sqs.queues.get(queue_name)
        if queue is None:
            return
        visibility = float(getattr(queue, "visibility_timeout", 30) or 0)
        delay = visibility if self.failure_visibility is None else self.failure_visibility
        held: dict[str, float] = {}  # message id -> real ms it was received
        try:
            for _ in range(self.max_batches_per_tick):
                if not self._one_batch(mapping, sqs, queue, region, visibility, held):
                    break
        finally:  # what was not deleted stays held until this queue is done for the tick, then times out
            self._release(queue, held, delay)

    def _one_batch(
        self,
        mapping: EventSourceMapping,
        sqs: SQSBackend,
        queue: Queue,
        region: str,
        visibility: float,
        held: dict[str, float],
    ) -> bool:
        """Receive, invoke, delete what succeeded; False when nothing was visible."""
        batch: list[Message] = []
        while len(batch) < max(1, mapping.batch_size):
            received_at = unix_time_millis()
            got = sqs.receive_message(
                queue.name,
                min(10, mapping.batch_size - len(batch)),
                wait_seconds_timeout=0,
                visibility_timeout=max(1, math.ceil(self.clock.real_seconds(visibility))),
                message_attribute_names=["All"],
            )
            if not got:
                break
            self._hold(queue, got)  # invisible while the function runs, whatever the real-time timeout
            held.update((m.id, received_at) for m in got)
            batch += got
        if not batch:
            return False
        ids = [m.id for m in batch]
        failed = set(ids)
        try:
            event = {"Records": [sqs_record(m, queue.queue_arn, region) for m in batch]}
            response = self.invoker(region, mapping.function_arn, event)
            failed = failed_message_ids(
                response, ids, "ReportBatchItemFailures" in (mapping.function_response_types or [])
            )
        except Exception:
            log.info("%s failed a batch of %d from %s", mapping.function_arn, len(batch), queue.name, exc_info=True)
        for message in batch:
            if message.id not in failed:
                try:
                    sqs.delete_message(queue.name, message.receipt_handle or "")
                except Exception:  # deleted meanwhile by another client: nothing left to do
                    log.debug("message %s already gone from %s", message.id, queue.name)
        return True

    @staticmethod
    def _hold(queue: Queue, received: list[Message]) -> None:
        ids = {m.id for m in received}
        for message in list(queue._messages):
            if message.id in ids:
                message.visible_at = math.inf

    def _release(self, queue: Queue, held: dict[str, float], delay: float) -> None:
        """Records still in the queue become visible ``delay`` emulated seconds after their receive (0: now)."""
        for message in list(queue._messages):
            received_at = held.get(message.id)
            if received_at is not None:
                message.visible_at = received_at + self.clock.real_seconds(delay) * 1000 if delay > 0 else 0.0


__all__ = [
    "ENABLED_STATES",
    "Cron",
    "EventRouter",
    "FunctionInvoker",
    "SqsPoller",
    "TargetInvoker",
    "alarm_state_change_event",
    "failed_message_ids",
    "install",
    "json_path",
    "rate_seconds",
    "scheduled_event",
    "sqs_record",
    "target_payload",
]
