"""Alarm evaluation and composite alarms on moto, driven by explicit emulated times."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.clock import TwinClock
from tandem.twin.extensions import cloudwatch_alarms
from tandem.twin.extensions.cloudwatch_alarms import AlarmEvaluator, AlarmStateChange, parse_rule

T0 = 1_800_000_000.0  # emulated epoch seconds, well clear of the real clock
QUEUE_DIMS = [{"Name": "QueueName", "Value": "tandem-transactions"}]


@pytest.fixture
def cw(aws_env: None) -> Iterator[Any]:
    cloudwatch_alarms.install()
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


@pytest.fixture
def evaluator() -> AlarmEvaluator:
    return AlarmEvaluator(TwinClock())


def put(cw: Any, value: float, at: float, dims: list[dict[str, str]] | None = None, name: str = "Age") -> None:
    cw.put_metric_data(
        Namespace="Tandem",
        MetricData=[
            {
                "MetricName": name,
                "Value": value,
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Dimensions": QUEUE_DIMS if dims is None else dims,
            }
        ],
    )


def put_alarm(cw: Any, name: str = "age", **overrides: Any) -> None:
    params: dict[str, Any] = {
        "AlarmName": name,
        "Namespace": "Tandem",
        "MetricName": "Age",
        "Dimensions": QUEUE_DIMS,
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": 300,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }
    params.update(overrides)
    cw.put_metric_alarm(**{k: v for k, v in params.items() if v is not None})  # None: leave it out


def state(cw: Any, name: str) -> str:
    alarms = cw.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    found = alarms["MetricAlarms"] + alarms["CompositeAlarms"]
    assert len(found) == 1
    value: str = found[0]["StateValue"]
    return value


def test_a_new_alarm_starts_in_insufficient_data_and_an_update_keeps_its_state(cw: Any) -> None:
    put_alarm(cw)
    assert state(cw, "age") == "INSUFFICIENT_DATA"
    cw.set_alarm_state(AlarmName="age", StateValue="ALARM", StateReason="forced")
    put_alarm(cw, Threshold=100)
    alarm = cw.describe_alarms(AlarmNames=["age"])["MetricAlarms"][0]
    assert (alarm["StateValue"], alarm["StateReason"], alarm["Threshold"]) == ("ALARM", "forced", 100.0)


def test_m_of_n_breaching_datapoints_raise_the_alarm_and_recovery_clears_it(cw: Any, evaluator: AlarmEvaluator) -> None:
    put_alarm(cw, AlarmDescription="queue stalled")
    changes: list[AlarmStateChange] = []
    evaluator.add_listener(changes.append)

    put(cw, 400, T0 - 150)  # window 2
    put(cw, 100, T0 - 90)  # window 1: below the threshold
    evaluator.tick(T0)
    assert state(cw, "age") == "OK"  # 1 of 3 breaching, the missing window is not breaching

    put(cw, 350, T0 - 30)  # window 0: 2 of the last 3 breach
    evaluator.tick(T0)
    alarm = cw.describe_alarms(AlarmNames=["age"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM"
    assert alarm["StateReason"].startswith("Threshold Crossed: 2 out of the last 3 datapoints")
    assert alarm["StateUpdatedTimestamp"].timestamp() == pytest.approx(T0)
    assert alarm["StateTransitionedTimestamp"].timestamp() == pytest.approx(T0)
    assert json.loads(alarm["StateReasonData"])["recentDatapoints"] == [350.0, 100.0, 400.0]

    assert [(c.old_state, c.new_state) for c in changes] == [("INSUFFICIENT_DATA", "OK"), ("OK", "ALARM")]
    change = changes[-1]
    assert (change.region, change.account, change.alarm_name) == ("us-east-1", "123456789012", "age")
    assert change.alarm_arn == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:age"
    assert change.timestamp == pytest.approx(T0)
    assert change.previous_reason.startswith("Threshold Crossed: 1 out of the last 2 datapoints")
    assert change.configuration["description"] == "queue stalled"
    assert change.configuration["metrics"][0]["metricStat"] == {
        "metric": {"namespace": "Tandem", "name": "Age", "dimensions": {"QueueName": "tandem-transactions"}},
        "period": 60,
        "stat": "Maximum",
    }

    evaluator.tick(T0 + 10)  # nothing changed: no new event
    assert len(changes) == 2

    for k in range(3):  # three healthy minutes push the breaching datapoints out of the range
        put(cw, 10, T0 + 60 + 60 * k)
    evaluator.tick(T0 + 181)
    assert state(cw, "age") == "OK"
    assert [c.new_state for c in changes] == ["OK", "ALARM", "OK"]

    history = cw.describe_alarm_history(AlarmName="age", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
    ]
    assert json.loads(history[1]["HistoryData"])["newState"]["stateValue"] == "ALARM"


@pytest.mark.parametrize(
    ("treat", "expected"),
    [
        ("notBreaching", "OK"),
        ("breaching", "ALARM"),
        ("missing", "INSUFFICIENT_DATA"),
        (None, "INSUFFICIENT_DATA"),  # the default is "missing"
        ("ignore", "ALARM"),  # keeps the state it was in
    ],
)
def test_missing_data_is_treated_as_configured(
    cw: Any, evaluator: AlarmEvaluator, treat: str | None, expected: str
) -> None:
    put_alarm(cw, "quiet", EvaluationPeriods=1, DatapointsToAlarm=1, TreatMissingData=treat)
    put(cw, 10, T0 - 30)
    evaluator.tick(T0)
    assert state(cw, "quiet") == "OK"  # a datapoint below the threshold
    cw.set_alarm_state(AlarmName="quiet", StateValue="ALARM", StateReason="from before")
    evaluator.tick(T0 + 120)  # no datapoint in the last period
    assert state(cw, "quiet") == expected


def test_missing_treatment_alarms_on_fewer_datapoints_than_m_when_all_breach(
    cw: Any, evaluator: AlarmEvaluator
) -> None:
    put_alarm(cw, "sparse", EvaluationPeriods=3, DatapointsToAlarm=3, TreatMissingData="missing")
    put(cw, 999, T0 - 10)  # "- - X" in AWS's table: ALARM
    evaluator.tick(T0)
    assert state(cw, "sparse") == "ALARM"


def test_dimensions_must_match_exactly(cw: Any, evaluator: AlarmEvaluator) -> None:
    put_alarm(cw, "exact", EvaluationPeriods=1, DatapointsToAlarm=1)
    put(cw, 999, T0 - 10, dims=[{"Name": "QueueName", "Value": "other-queue"}])
    put(cw, 999, T0 - 10, dims=[*QUEUE_DIMS, {"Name": "Extra", "Value": "x"}])
    put(cw, 999, T0 - 10, dims=[])
    put(cw, 999, T0 - 10, name="OtherMetric")
    evaluator.tick(T0)
    assert state(cw, "exact") == "OK"  # nothing matched: missing, not breaching
    put(cw, 999, T0 - 10)
    evaluator.tick(T0)
    assert state(cw, "exact") == "ALARM"


@pytest.mark.parametrize(
    ("statistic", "threshold", "expected"),
    [
        ({"Statistic": "Sum"}, 59, "ALARM"),
        ({"Statistic": "Sum"}, 60, "OK"),
        ({"Statistic": "Average"}, 19, "ALARM"),
        ({"Statistic": "Minimum"}, 9, "ALARM"),
        ({"Statistic": "Minimum"}, 10, "OK"),
        ({"Statistic": "SampleCount"}, 2, "ALARM"),
        ({"ExtendedStatistic": "p50"}, 19, "ALARM"),
        ({"ExtendedStatistic": "p50"}, 20, "OK"),
    ],
)
def test_statistics(
    cw: Any, evaluator: AlarmEvaluator, statistic: dict[str, str], threshold: float, expected: str
) -> None:
    params = {
        "AlarmName": "stat",
        "Namespace": "Tandem",
        "MetricName": "Age",
        "Dimensions": QUEUE_DIMS,
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": threshold,
        "ComparisonOperator": "GreaterThanThreshold",
        **statistic,
    }
    cw.put_metric_alarm(**params)
    for value in (10, 20, 30):
        put(cw, value, T0 - 5)
    evaluator.tick(T0)
    assert state(cw, "stat") == expected


def test_datapoints_without_timestamp_are_restamped_in_emulated_time(cw: Any) -> None:
    clock = TwinClock(scale=60)  # one real second is an emulated minute
    evaluator = AlarmEvaluator(clock)
    put_alarm(cw, "implicit", EvaluationPeriods=1, DatapointsToAlarm=1)
    cw.put_metric_data(Namespace="Tandem", MetricData=[{"MetricName": "Age", "Value": 999, "Dimensions": QUEUE_DIMS}])
    start = clock.now()
    later = start + 3600  # an emulated hour later: moto's real stamp would still look "now"
    evaluator.tick(later)
    assert state(cw, "implicit") == "OK"  # the datapoint is an hour old in emulated time
    stats = cw.get_metric_statistics(
        Namespace="Tandem",
        MetricName="Age",
        Dimensions=QUEUE_DIMS,
        StartTime=datetime.fromtimestamp(start - 120, UTC),
        EndTime=datetime.fromtimestamp(start + 60, UTC),
        Period=60,
        Statistics=["Maximum"],
    )
    assert [d["Maximum"] for d in stats["Datapoints"]] == [999.0]


def test_a_restamped_datapoint_counts_at_the_time_it_was_put(cw: Any) -> None:
    clock = TwinClock()
    evaluator = AlarmEvaluator(clock)
    put_alarm(cw, "implicit", EvaluationPeriods=1, DatapointsToAlarm=1)
    cw.put_metric_data(Namespace="Tandem", MetricData=[{"MetricName": "Age", "Value": 999, "Dimensions": QUEUE_DIMS}])
    evaluator.tick(clock.now())
    assert state(cw, "implicit") == "ALARM"


def test_composite_alarm_follows_its_rule(cw: Any, evaluator: AlarmEvaluator) -> None:
    put_alarm(cw, "a", EvaluationPeriods=1, DatapointsToAlarm=1)
    put_alarm(cw, "b", MetricName="Other", EvaluationPeriods=1, DatapointsToAlarm=1, TreatMissingData="missing")
    cw.put_composite_alarm(
        AlarmName="both",
        AlarmRule='ALARM("a") AND NOT OK(arn:aws:cloudwatch:us-east-1:123456789012:alarm:b)',
        AlarmDescription="a fires while b is not known good",
    )
    changes: list[AlarmStateChange] = []
    evaluator.add_listener(changes.append)
    assert state(cw, "both") == "INSUFFICIENT_DATA"

    put(cw, 999, T0 - 10)  # a -> ALARM, b has no data -> INSUFFICIENT_DATA
    evaluator.tick(T0)
    assert (state(cw, "a"), state(cw, "b"), state(cw, "both")) == ("ALARM", "INSUFFICIENT_DATA", "ALARM")

    put(cw, 1, T0 + 40, name="Other")  # b -> OK
    evaluator.tick(T0 + 45)
    assert (state(cw, "a"), state(cw, "b"), state(cw, "both")) == ("ALARM", "OK", "OK")

    composite = [c for c in changes if c.alarm_name == "both"]
    assert [(c.old_state, c.new_state) for c in composite] == [("INSUFFICIENT_DATA", "ALARM"), ("ALARM", "OK")]
    assert composite[0].alarm_type == "CompositeAlarm"
    assert composite[0].configuration == {
        "description": "a fires while b is not known good",
        "alarmRule": 'ALARM("a") AND NOT OK(arn:aws:cloudwatch:us-east-1:123456789012:alarm:b)',
    }
    reason_data = json.loads(composite[0].reason_data or "{}")
    assert {t["arn"].rsplit(":", 1)[1] for t in reason_data["triggeringAlarms"]} == {"a", "b"}


def test_describe_alarms_shows_both_kinds_as_aws_does(cw: Any, evaluator: AlarmEvaluator) -> None:
    put_alarm(cw, "a", EvaluationPeriods=1, DatapointsToAlarm=1)
    cw.put_composite_alarm(AlarmName="c", AlarmRule="ALARM(a) OR FALSE", AlarmActions=[], ActionsEnabled=False)
    put(cw, 999, T0 - 10)
    evaluator.tick(T0)

    default = cw.describe_alarms()
    assert [a["AlarmName"] for a in default["MetricAlarms"]] == ["a"]
    assert default["CompositeAlarms"] == []  # AWS returns only metric alarms unless AlarmTypes says otherwise

    composite = cw.describe_alarms(AlarmTypes=["CompositeAlarm"])
    assert composite["MetricAlarms"] == []
    (c,) = composite["CompositeAlarms"]
    assert (c["AlarmName"], c["AlarmRule"], c["StateValue"], c["ActionsEnabled"]) == (
        "c",
        "ALARM(a) OR FALSE",
        "ALARM",
        False,
    )
    assert c["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:c"
    assert c["StateTransitionedTimestamp"].timestamp() == pytest.approx(T0)

    both = cw.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"], StateValue="ALARM")
    assert (len(both["MetricAlarms"]), len(both["CompositeAlarms"])) == (1, 1)
    assert [a["AlarmName"] for a in cw.describe_alarms(ChildrenOfAlarmName="c")["MetricAlarms"]] == ["a"]
    assert [a["AlarmName"] for a in cw.describe_alarms(ParentsOfAlarmName="a")["CompositeAlarms"]] == ["c"]
    assert cw.describe_alarms(AlarmNamePrefix="a", StateValue="OK")["MetricAlarms"] == []

    cw.delete_alarms(AlarmNames=["c"])
    assert cw.describe_alarms(AlarmTypes=["CompositeAlarm"])["CompositeAlarms"] == []
    kept = cw.describe_alarm_history(AlarmName="c")["AlarmHistoryItems"]  # history outlives the alarm
    assert kept[0]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert kept[0]["AlarmType"] == "CompositeAlarm"


def test_composite_alarm_rules_are_validated(cw: Any) -> None:
    put_alarm(cw, "a")
    with pytest.raises(ClientError, match="do not exist"):
        cw.put_composite_alarm(AlarmName="c", AlarmRule='ALARM("a") OR ALARM("nope")')
    with pytest.raises(ClientError, match="AlarmRule"):
        cw.put_composite_alarm(AlarmName="c", AlarmRule='ALARM("a") AND')


@pytest.mark.parametrize(
    ("rule", "states", "expected"),
    [
        ("TRUE", {}, True),
        ("false", {}, False),
        ('ALARM("x") OR ALARM("y") AND ALARM("z")', {"x": "ALARM", "y": "OK", "z": "OK"}, True),
        ('(ALARM("x") OR ALARM("y")) AND ALARM("z")', {"x": "ALARM", "y": "OK", "z": "OK"}, False),
        ("NOT NOT INSUFFICIENT_DATA(x)", {"x": "INSUFFICIENT_DATA"}, True),
        ('OK("missing alarm")', {}, False),
    ],
)
def test_rule_language(rule: str, states: dict[str, str], expected: bool) -> None:
    assert parse_rule(rule).evaluate(states.get) is expected


def test_set_alarm_state_through_the_api_reaches_listeners(cw: Any, evaluator: AlarmEvaluator) -> None:
    put_alarm(cw, "manual", TreatMissingData="ignore")  # no data: the evaluator keeps what the API set
    changes: list[AlarmStateChange] = []
    evaluator.add_listener(changes.append)
    cw.set_alarm_state(AlarmName="manual", StateValue="ALARM", StateReason="drill", StateReasonData="{}")
    evaluator.tick(T0)
    assert [(c.old_state, c.new_state, c.reason) for c in changes] == [("INSUFFICIENT_DATA", "ALARM", "drill")]


def test_sns_alarm_actions_are_published(cw: Any, evaluator: AlarmEvaluator) -> None:
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    put_alarm(cw, "noisy", EvaluationPeriods=1, DatapointsToAlarm=1, AlarmActions=[topic], OKActions=[topic])
    put(cw, 999, T0 - 10)
    evaluator.tick(T0)
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    (body,) = [json.loads(m["Body"]) for m in messages]
    assert (body["AlarmName"], body["OldStateValue"], body["NewStateValue"]) == ("noisy", "INSUFFICIENT_DATA", "ALARM")
    assert body["Trigger"]["Threshold"] == 300.0


def test_a_region_that_is_down_is_frozen(cw: Any) -> None:
    evaluator = AlarmEvaluator(TwinClock(), is_region_up=lambda region: region != "us-east-1")
    put_alarm(cw, "frozen", EvaluationPeriods=1, DatapointsToAlarm=1)
    put(cw, 999, T0 - 10)
    evaluator.tick(T0)
    assert state(cw, "frozen") == "INSUFFICIENT_DATA"
