"""EventBridge delivery (alarm events, schedules) and the SQS event source mapping, on explicit emulated times."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaBackend

from tandem.twin.clock import TwinClock
from tandem.twin.extensions import event_routing
from tandem.twin.extensions.cloudwatch_alarms import AlarmEvaluator, AlarmStateChange
from tandem.twin.extensions.event_routing import (
    Cron,
    EventRouter,
    SqsPoller,
    alarm_state_change_event,
    failed_message_ids,
    rate_seconds,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, emulated
ACCOUNT = "123456789012"
REGION = "us-east-1"
FAILOVER_FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:failover"
OTHER_FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:other"


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    event_routing.install()
    with mock_aws():
        yield


class Targets:
    """Collects what the router delivers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, region: str, arn: str, payload: Any) -> None:
        self.calls.append((region, arn, payload))

    def to(self, arn: str) -> list[Any]:
        return [payload for _, target, payload in self.calls if target == arn]


def rule(
    name: str, pattern: dict[str, Any] | None, target: str, *, schedule: str | None = None, **target_extra: Any
) -> None:
    events = boto3.client("events", region_name=REGION)
    kwargs: dict[str, Any] = {"Name": name}
    if pattern is not None:
        kwargs["EventPattern"] = json.dumps(pattern)
    if schedule is not None:
        kwargs["ScheduleExpression"] = schedule
    events.put_rule(**kwargs)
    events.put_targets(Rule=name, Targets=[{"Id": "t", "Arn": target, **target_extra}])


# ---------------------------------------------------------------------------------------------- alarm events


def test_an_alarm_going_to_alarm_reaches_matching_targets_as_the_aws_event(aws: None) -> None:
    evaluator = AlarmEvaluator(TwinClock())  # installs the CloudWatch extension before the alarm exists
    cw = boto3.client("cloudwatch", region_name=REGION)
    cw.put_metric_alarm(
        AlarmName="tandem-heartbeat-stale",
        AlarmDescription="primary heartbeat stale",
        Namespace="Tandem",
        MetricName="HeartbeatAge",
        Dimensions=[{"Name": "Region", "Value": "us-west-2"}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=120,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    cw.set_alarm_state(AlarmName="tandem-heartbeat-stale", StateValue="OK", StateReason="healthy")
    targets = Targets()
    router = EventRouter(targets, TwinClock())
    evaluator.add_listener(router.on_alarm_state_change)
    alarm_arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:tandem-heartbeat-stale"
    rule(
        "to-alarm",
        {
            "source": ["aws.cloudwatch"],
            "detail-type": ["CloudWatch Alarm State Change"],
            "resources": [{"prefix": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:tandem-"}],
            "detail": {"state": {"value": ["ALARM"]}, "previousState": {"value": [{"anything-but": "ALARM"}]}},
        },
        FAILOVER_FN,
    )
    rule("to-ok", {"source": ["aws.cloudwatch"], "detail": {"state": {"value": ["OK"]}}}, OTHER_FN)
    rule("disabled", {"source": ["aws.cloudwatch"]}, OTHER_FN)
    boto3.client("events", region_name=REGION).disable_rule(Name="disabled")
    evaluator.tick(T0)  # the "healthy" SetAlarmState (INSUFFICIENT_DATA -> OK) reaches to-ok
    assert len(targets.to(OTHER_FN)) == 1
    targets.calls.clear()

    cw.put_metric_data(
        Namespace="Tandem",
        MetricData=[
            {
                "MetricName": "HeartbeatAge",
                "Value": 300,
                "Timestamp": datetime.fromtimestamp(T0 + 50, UTC),
                "Dimensions": [{"Name": "Region", "Value": "us-west-2"}],
            }
        ],
    )
    evaluator.tick(T0 + 60)

    assert targets.to(OTHER_FN) == []
    ((region, _, event),) = targets.calls
    assert region == REGION
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["id"]
    detail = event["detail"]
    assert {k: v for k, v in event.items() if k not in ("id", "detail")} == {
        "version": "0",
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": ACCOUNT,
        "time": "2027-01-15T08:01:00Z",
        "region": REGION,
        "resources": [alarm_arn],
    }
    assert detail["alarmName"] == "tandem-heartbeat-stale"
    assert detail["state"]["value"] == "ALARM"
    assert detail["state"]["timestamp"] == "2027-01-15T08:01:00.000+0000"
    assert detail["state"]["reason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints [300.0")
    assert json.loads(detail["state"]["reasonData"])["threshold"] == 120.0
    assert (detail["previousState"]["value"], detail["previousState"]["reason"]) == ("OK", "healthy")
    assert set(detail) == {"alarmName", "state", "previousState", "configuration"}
    assert detail["configuration"]["description"] == "primary heartbeat stale"
    (metric,) = detail["configuration"]["metrics"]
    assert metric["metricStat"] == {
        "metric": {"namespace": "Tandem", "name": "HeartbeatAge", "dimensions": {"Region": "us-west-2"}},
        "period": 60,
        "stat": "Maximum",
    }
    assert metric["returnData"] is True


def change(**overrides: Any) -> AlarmStateChange:
    values: dict[str, Any] = {
        "region": REGION,
        "account": ACCOUNT,
        "alarm_name": "a",
        "alarm_arn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:a",
        "alarm_type": "MetricAlarm",
        "old_state": "OK",
        "new_state": "ALARM",
        "reason": "r",
        "reason_data": None,
        "timestamp": T0,
        "previous_reason": "p",
        "previous_reason_data": None,
        "previous_timestamp": T0 - 60,
        "configuration": {"metrics": []},
    }
    values.update(overrides)
    return AlarmStateChange(**values)


def test_the_alarm_event_omits_reason_data_when_there_is_none() -> None:
    event = alarm_state_change_event(change(), event_id="e-1")
    assert event["id"] == "e-1"
    assert event["detail"]["state"] == {"value": "ALARM", "reason": "r", "timestamp": "2027-01-15T08:00:00.000+0000"}
    assert event["detail"]["previousState"]["timestamp"] == "2027-01-15T07:59:00.000+0000"


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"detail": {"alarmName": [{"prefix": "tandem-"}]}}, True),
        ({"detail": {"alarmName": [{"anything-but": ["tandem-x", "tandem-y"]}]}}, True),
        ({"detail": {"alarmName": [{"anything-but": {"prefix": "tandem-"}}]}}, False),
        ({"detail": {"state": {"reasonData": [{"exists": False}]}}}, True),
        ({"detail": {"state": {"reason": [{"exists": True}]}}}, True),
        ({"detail": {"state": {"value": ["OK", "INSUFFICIENT_DATA"]}}}, False),
        ({"detail": {"configuration": {"threshold": [{"numeric": [">", 100, "<=", 300]}]}}}, True),
        ({"detail": {"configuration": {"threshold": [{"numeric": [">", 300]}]}}}, False),
        ({"$or": [{"source": ["aws.events"]}, {"detail": {"state": {"value": ["ALARM"]}}}]}, True),
    ],
)
def test_pattern_operators_match_as_in_aws(aws: None, pattern: dict[str, Any], matches: bool) -> None:
    targets = Targets()
    rule("r", pattern, FAILOVER_FN)
    event = alarm_state_change_event(change(alarm_name="tandem-a", configuration={"threshold": 300}))
    delivered = EventRouter(targets, TwinClock()).route(ACCOUNT, REGION, event)
    assert delivered == ([FAILOVER_FN] if matches else [])


def test_input_shaping(aws: None) -> None:
    targets = Targets()
    pattern = {"source": ["aws.cloudwatch"]}
    rule("constant", pattern, "arn:aws:lambda:us-east-1:123456789012:function:c", Input='{"fixed": 1}')
    rule("path", pattern, "arn:aws:lambda:us-east-1:123456789012:function:p", InputPath="$.detail.state")
    rule(
        "transform",
        pattern,
        "arn:aws:lambda:us-east-1:123456789012:function:t",
        InputTransformer={
            "InputPathsMap": {"name": "$.detail.alarmName", "res": "$.resources[0]"},
            "InputTemplate": '{"alarm": "<name>", "arn": "<res>", "rule": "<aws.events.rule-name>"}',
        },
    )
    EventRouter(targets, TwinClock()).route(ACCOUNT, REGION, alarm_state_change_event(change()))
    assert targets.to("arn:aws:lambda:us-east-1:123456789012:function:c") == [{"fixed": 1}]
    assert targets.to("arn:aws:lambda:us-east-1:123456789012:function:p")[0]["value"] == "ALARM"
    assert targets.to("arn:aws:lambda:us-east-1:123456789012:function:t") == [
        {"alarm": "a", "arn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:a", "rule": "transform"}
    ]


def test_a_target_failure_does_not_stop_the_others(aws: None) -> None:
    calls: list[str] = []

    def invoker(region: str, arn: str, payload: Any) -> None:
        calls.append(arn)
        if arn == FAILOVER_FN:
            raise RuntimeError("boom")

    rule("a", {"source": ["aws.cloudwatch"]}, FAILOVER_FN)
    rule("b", {"source": ["aws.cloudwatch"]}, OTHER_FN)
    delivered = EventRouter(invoker, TwinClock()).route(ACCOUNT, REGION, alarm_state_change_event(change()))
    assert sorted(calls) == sorted([FAILOVER_FN, OTHER_FN])
    assert delivered == [OTHER_FN]


# ---------------------------------------------------------------------------------------------- schedules


def test_a_rate_schedule_fires_once_per_emulated_minute_and_not_when_disabled(aws: None) -> None:
    targets = Targets()
    router = EventRouter(targets, TwinClock())
    rule("every-minute", None, FAILOVER_FN, schedule="rate(1 minute)")
    rule("pattern-only", {"source": ["aws.events"]}, OTHER_FN)  # scheduled events are not routed by pattern
    for second in range(0, 181, 10):
        router.tick(T0 + second)
    events = targets.to(FAILOVER_FN)
    assert [e["time"] for e in events] == ["2027-01-15T08:01:00Z", "2027-01-15T08:02:00Z", "2027-01-15T08:03:00Z"]
    assert events[0]["detail-type"] == "Scheduled Event"
    assert events[0]["source"] == "aws.events"
    assert events[0]["resources"] == [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/every-minute"]
    assert events[0]["detail"] == {}
    assert targets.to(OTHER_FN) == []

    boto3.client("events", region_name=REGION).disable_rule(Name="every-minute")
    for second in range(190, 400, 10):
        router.tick(T0 + second)
    assert len(targets.to(FAILOVER_FN)) == 3

    boto3.client("events", region_name=REGION).enable_rule(Name="every-minute")
    router.tick(T0 + 400)  # missed firings while disabled are skipped
    router.tick(T0 + 420)
    assert len(targets.to(FAILOVER_FN)) == 4
    assert targets.to(FAILOVER_FN)[-1]["time"] == "2027-01-15T08:07:00Z"


def test_a_late_tick_coalesces_missed_firings(aws: None) -> None:
    targets = Targets()
    router = EventRouter(targets, TwinClock())
    rule("every-5", None, FAILOVER_FN, schedule="rate(5 minutes)")
    router.tick(T0)
    router.tick(T0 + 3600)
    assert [e["time"] for e in targets.to(FAILOVER_FN)] == ["2027-01-15T09:00:00Z"]


def test_a_cron_schedule_fires_on_matching_utc_minutes(aws: None) -> None:
    targets = Targets()
    router = EventRouter(targets, TwinClock())
    rule("quarter-hourly", None, FAILOVER_FN, schedule="cron(0/15 * * * ? *)")
    for second in range(0, 1861, 60):
        router.tick(T0 + second)
    assert [e["time"][11:16] for e in targets.to(FAILOVER_FN)] == ["08:15", "08:30"]


def test_expressions() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 * * * ? *)") is None
    weekdays_9 = Cron.parse("cron(0 9 ? * MON-FRI *)")
    assert weekdays_9.matches(datetime(2027, 1, 15, 9, 0))  # a Friday
    assert not weekdays_9.matches(datetime(2027, 1, 16, 9, 0))  # Saturday
    assert Cron.parse("cron(30 2 1 JAN,JUL ? 2027)").matches(datetime(2027, 7, 1, 2, 30))
    assert Cron.parse("cron(0 0 ? * 1 *)").matches(datetime(2027, 1, 17))  # 1 is Sunday
    with pytest.raises(ValueError, match="not supported"):
        Cron.parse("cron(0 0 L * ? *)")


# ---------------------------------------------------------------------------------------------- SQS mapping


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


class Queues:
    """A queue with a DLQ, a function and its mapping, created through the API (no Docker involved)."""

    def __init__(self, max_receive_count: int = 3, **mapping: Any) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.lam = boto3.client("lambda", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        self.function_arn = self.lam.create_function(
            FunctionName="processor",
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": _zip()},
        )["FunctionArn"]
        self.dlq = self.sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
        dlq_arn = self.arn(self.dlq)
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
        self.url = self.sqs.create_queue(
            QueueName="work", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive}
        )["QueueUrl"]
        self.queue_arn = self.arn(self.url)
        self.uuid = self.lam.create_event_source_mapping(
            EventSourceArn=self.queue_arn, FunctionName="processor", **mapping
        )["UUID"]

    def arn(self, url: str) -> str:
        arn: str = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return arn

    def send(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=body,
                MessageAttributes={"kind": {"DataType": "String", "StringValue": "tx"}},
            )

    def counts(self, url: str | None = None) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


class Function:
    """A stand-in for the twin's function worker."""

    def __init__(self, fail: set[str] | None = None, raises: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail or set()
        self.raises = raises

    def __call__(self, region: str, function_arn: str, event: dict[str, Any]) -> Any:
        self.events.append(event)
        if self.raises:
            raise RuntimeError("invocation failed")
        failures = [r["messageId"] for r in event["Records"] if r["body"] in self.fail]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}

    def bodies(self) -> list[str]:
        return [r["body"] for e in self.events for r in e["Records"]]


def test_moto_no_longer_consumes_a_queue_with_an_enabled_mapping(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("moto tried to invoke the function itself")

    monkeypatch.setattr(LambdaBackend, "send_sqs_batch", refuse)
    queues = Queues()
    queues.send("a", "b")
    assert queues.counts() == (2, 0)
    mapping = queues.lam.get_event_source_mapping(UUID=queues.uuid)
    assert mapping["State"] == "Enabled"


def test_the_poller_delivers_the_lambda_event_and_deletes_on_success(aws: None) -> None:
    queues = Queues(BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])
    queues.send(*[f"m{i}" for i in range(12)])
    function = Function()
    SqsPoller(function, TwinClock()).tick(T0)
    assert [len(e["Records"]) for e in function.events] == [10, 2]
    record = function.events[0]["Records"][0]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:sqs",
        queues.queue_arn,
        REGION,
    )
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert set(record["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert record["messageAttributes"] == {
        "kind": {"stringValue": "tx", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    }
    assert sorted(function.bodies()) == sorted(f"m{i}" for i in range(12))
    assert queues.counts() == (0, 0)


def test_the_poller_consumes_only_while_the_mapping_is_enabled(aws: None) -> None:
    queues = Queues(Enabled=False)
    function = Function()
    poller = SqsPoller(function, TwinClock())
    queues.send("a", "b")
    poller.tick(T0)
    assert function.events == []
    assert queues.counts() == (2, 0)

    queues.lam.update_event_source_mapping(UUID=queues.uuid, Enabled=True)
    poller.tick(T0 + 1)
    assert sorted(function.bodies()) == ["a", "b"]
    assert queues.counts() == (0, 0)

    queues.lam.update_event_source_mapping(UUID=queues.uuid, Enabled=False)
    queues.send("c")
    poller.tick(T0 + 2)
    assert sorted(function.bodies()) == ["a", "b"]
    assert queues.counts() == (1, 0)


def test_partial_batch_failures_are_redelivered_and_end_in_the_dlq(aws: None) -> None:
    queues = Queues(max_receive_count=3, FunctionResponseTypes=["ReportBatchItemFailures"])
    queues.send("good-1", "poison", "good-2")
    function = Function(fail={"poison"})
    poller = SqsPoller(function, TwinClock(), failure_visibility=0)

    poller.tick(T0)
    assert queues.counts() == (1, 0)  # the poison record is visible again at once
    poller.tick(T0 + 1)
    poller.tick(T0 + 2)
    assert function.bodies().count("poison") == 3
    receive_counts = [r["attributes"]["ApproximateReceiveCount"] for e in function.events for r in e["Records"]]
    assert receive_counts[-1] == "3"
    poller.tick(T0 + 3)  # 3 receives = maxReceiveCount: SQS moves it to the DLQ on the next receive
    assert function.bodies().count("poison") == 3
    assert queues.counts() == (0, 0)
    assert queues.counts(queues.dlq) == (1, 0)
    (dead,) = queues.sqs.receive_message(QueueUrl=queues.dlq)["Messages"]
    assert dead["Body"] == "poison"


def test_failed_records_stay_invisible_for_the_visibility_timeout(aws: None) -> None:
    queues = Queues(FunctionResponseTypes=["ReportBatchItemFailures"])
    queues.send("poison")
    function = Function(fail={"poison"})
    poller = SqsPoller(function, TwinClock())  # VisibilityTimeout 30 emulated s = 30 real s at scale 1
    poller.tick(T0)
    poller.tick(T0 + 1)
    assert len(function.events) == 1
    assert queues.counts() == (0, 1)


def test_a_failed_invocation_leaves_the_whole_batch(aws: None) -> None:
    queues = Queues()
    queues.send("a", "b")
    function = Function(raises=True)
    SqsPoller(function, TwinClock(), failure_visibility=0).tick(T0)
    assert len(function.events) == 1
    assert queues.counts() == (2, 0)


def test_without_report_batch_item_failures_a_successful_invocation_deletes_all(aws: None) -> None:
    queues = Queues()
    queues.send("poison", "good")
    SqsPoller(Function(fail={"poison"}), TwinClock(), failure_visibility=0).tick(T0)
    assert queues.counts() == (0, 0)


def test_a_region_that_is_down_does_not_poll(aws: None) -> None:
    queues = Queues()
    queues.send("a")
    function = Function()
    SqsPoller(function, TwinClock(), is_region_up=lambda region: False).tick(T0)
    assert function.events == []
    assert queues.counts() == (1, 0)


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b"}),
        ({"batchItemFailures": [{"id": "b"}]}, {"a", "b"}),
        ("not an object", {"a", "b"}),
    ],
)
def test_batch_item_failure_rules(response: Any, failed: set[str]) -> None:
    assert failed_message_ids(response, ["a", "b"], True) == failed
    assert failed_message_ids(response, ["a", "b"], False) == set()
