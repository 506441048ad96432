"""The monitor's edges: what input it accepts, its settings, its EMF lines, the observer's answers."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from replication_monitor import app, aurora_app
from replication_monitor.events import parse_trigger
from replication_monitor.metrics import EmfSink
from tandem.lambda_runtime import LambdaContext
from tandem.local import function_environment, ledger_table_keys
from tandem_core import clients
from tandem_core.aurora_observer import AuroraObservation, InvokedAurora
from tandem_core.replication import Store
from tandem_core.settings import ConfigurationError, MonitorSettings
from tests.conftest import load_event

BASE_ENV = {
    "PEER_REGION": "us-west-2", "LEDGER_TABLE_NAME": "tandem-ledger", "ARCHIVE_BUCKET_NAME": "tandem-archive-primary",
    "PEER_ARCHIVE_BUCKET_NAME": "tandem-archive-dr", "TRANSACTION_QUEUE_URL": "https://sqs/q",
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def scheduled_like() -> st.SearchStrategy[dict[str, Any]]:
    """Mutations of the real scheduled event: a key dropped, replaced, or added."""
    base = load_event("monitor_scheduled.json")
    keys = st.sampled_from([*base, "extra"])
    return st.builds(
        lambda drop, key, value: {**{k: v for k, v in base.items() if k != drop}, key: value},
        st.sampled_from([None, *base]), keys, json_values,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ input
def test_the_sample_event_is_what_an_eventbridge_schedule_delivers() -> None:
    trigger = parse_trigger(load_event("monitor_scheduled.json"))
    assert trigger.kind == "schedule"
    assert trigger.scheduled_at is not None
    assert trigger.scheduled_at.isoformat() == "2026-11-28T10:15:00+00:00"
    assert trigger.rule is not None
    assert trigger.rule.endswith(":rule/tandem-app-primary-replication-monitor")


def test_an_empty_object_is_a_manual_run() -> None:
    assert parse_trigger({}).kind == "manual"


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, scheduled_like()))
def test_any_input_is_a_trigger_or_one_clear_line(event: Any) -> None:
    try:
        trigger = parse_trigger(event)
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith(("replication_monitor takes a JSON object", "not a scheduled event"))
    else:
        assert isinstance(event, dict)
        if event:
            assert event["source"] == "aws.events"
            assert event["detail-type"] == "Scheduled Event"
        assert trigger.kind == ("schedule" if event else "manual")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([1, 2], "takes a JSON object (a scheduled event or {}), not list"),
        ("tick", "not str"),
        ({"Records": []}, "not a scheduled event: source: Field required"),
        ({**load_event("monitor_scheduled.json"), "source": "aws.s3"}, "not a scheduled event: source"),
        ({**load_event("monitor_scheduled.json"), "detail-type": "Object Created"}, "detail-type"),
        ({**load_event("monitor_scheduled.json"), "time": "yesterday"}, "not a scheduled event: time"),
    ],
)
def test_bad_input_fails_in_the_handler_before_any_aws_call(event: Any, message: str) -> None:
    app.build_monitor.cache_clear()
    with pytest.raises(ValueError, match=r"^[^\n]+$") as err:
        app.lambda_handler(event, LambdaContext("monitor", "us-east-1"))  # no settings needed: input comes first
    assert message in str(err.value)
    assert app.build_monitor.cache_info().currsize == 0


# ------------------------------------------------------------------------------------------------ settings
def test_monitor_settings_defaults_are_the_documented_ones() -> None:
    s = MonitorSettings.from_env(BASE_ENV)
    assert (s.rpo_budget_seconds, s.lag_warning_seconds, s.heartbeat_stale_seconds) == (5.0, 2.0, 90.0)
    assert (s.probe_count, s.probe_interval_seconds, s.probe_timeout_seconds) == (6, 10.0, 2.0)
    assert (s.peer_health_url, s.aurora_observer_function, s.archive_replication_rule) == (None, None, "to-peer-region")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAG_WARNING_SECONDS": "5"}, "LAG_WARNING_SECONDS must be below RPO_BUDGET_SECONDS"),
        ({"HEARTBEAT_STALE_SECONDS": "15"}, "HEARTBEAT_STALE_SECONDS must exceed"),
        ({"PEER_HEALTH_URL": "http://peer.example/health"}, "must use https"),
        ({"PEER_HEALTH_URL": "ftp://peer/health"}, "must be an https:// URL"),
        ({"PEER_REGION": "mars"}, "PEER_REGION"),
        ({"PROBE_COUNT": "0"}, "PROBE_COUNT"),
        ({"PROBE_INTERVAL_SECONDS": "-1"}, "PROBE_INTERVAL_SECONDS"),
    ],
)
def test_bad_monitor_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MonitorSettings.from_env({**BASE_ENV, **env})


def test_missing_monitor_variables_are_named_and_empty_optionals_are_unset() -> None:
    with pytest.raises(ConfigurationError) as err:
        MonitorSettings.from_env({})
    for name in ("PEER_REGION", "LEDGER_TABLE_NAME", "TRANSACTION_QUEUE_URL", "PEER_ARCHIVE_BUCKET_NAME"):
        assert name in str(err.value)
    s = MonitorSettings.from_env({**BASE_ENV, "PEER_HEALTH_URL": "", "AURORA_OBSERVER_FUNCTION": ""})
    assert s.peer_health_url is None
    assert s.aurora_observer_function is None
    assert MonitorSettings.from_env({**BASE_ENV, "PEER_HEALTH_URL": "http://127.0.0.1:9/health"}).peer_health_url


# ------------------------------------------------------------------------------------------------ metrics
def emf_lines(text: str) -> list[dict[str, Any]]:
    """The EMF objects printed, each metric's value list collapsed to its one value."""
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            data = json.loads(line)
            names = {m["Name"] for m in data["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
            out.append(
                {k: (v[0] if k in names and isinstance(v, list) and len(v) == 1 else v) for k, v in data.items()}
            )
    return out


NOW = float(int(time.time()))


def test_probe_rounds_are_high_resolution_with_their_own_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    sink = EmfSink("us-west-2")
    sink.probe_round(NOW, False, 12.5)
    sink.probe_round(NOW + 10, None, None)  # nothing known: nothing published
    (line,) = emf_lines(capsys.readouterr().out)
    meta = line["_aws"]["CloudWatchMetrics"][0]
    assert meta["Namespace"] == "Tandem/Replication"
    assert meta["Dimensions"] == [["Region"]]
    assert {m["Name"]: m.get("StorageResolution") for m in meta["Metrics"]} == {
        "PeerHealthy": 1, "PeerHeartbeatAgeSeconds": 1,
    }  # fmt: skip
    assert (line["Region"], line["PeerHealthy"], line["PeerHeartbeatAgeSeconds"]) == ("us-west-2", 0.0, 12.5)
    assert line["_aws"]["Timestamp"] == int(NOW * 1000)


def test_the_peers_word_on_its_ledger_is_a_high_resolution_duration(capsys: pytest.CaptureFixture[str]) -> None:
    EmfSink("us-west-2").probe_round(NOW, True, 3.0, 20.125)
    (line,) = emf_lines(capsys.readouterr().out)
    metrics = {m["Name"]: m for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert metrics["PeerLedgerFailingSeconds"] == {"Name": "PeerLedgerFailingSeconds", "Unit": "Seconds",
                                                   "StorageResolution": 1}  # fmt: skip
    assert line["PeerLedgerFailingSeconds"] == 20.125


def test_an_unknown_lag_is_not_published(capsys: pytest.CaptureFixture[str]) -> None:
    EmfSink("us-east-1").run(NOW, {Store.AURORA: 0.0, Store.DYNAMODB: None, Store.S3: 4.25}, False, False)
    (line,) = emf_lines(capsys.readouterr().out)
    names = {m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"AuroraLagSeconds", "S3LagSeconds", "Ready", "FailoverArmed"}
    assert (line["AuroraLagSeconds"], line["S3LagSeconds"], line["Ready"]) == (0.0, 4.25, 0.0)
    assert "service" not in line


# ------------------------------------------------------------------------------------------------ observer
class _Lambda:
    def __init__(self, payload: bytes, function_error: str | None = None) -> None:
        self.payload, self.function_error = payload, function_error

    def invoke(self, **_: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(self.payload)}
        if self.function_error:
            out["FunctionError"] = self.function_error
        return out


def test_the_observer_answer_is_read_back_exactly() -> None:
    obs = AuroraObservation(
        True, writer=False, rpo_lag_seconds=0.25, status_age_seconds=3.0, heartbeat_age_seconds=41.0
    )
    assert InvokedAurora(_Lambda(json.dumps(obs.as_dict()).encode()), "fn").observe() == obs


@pytest.mark.parametrize(
    ("payload", "error", "expected"),
    [
        (b'{"errorMessage": "Task timed out after 10.00 seconds"}', "Unhandled", "observer failed: Task timed out"),
        (b"[1]", None, "observer unreachable: ValueError"),
        (b'{"writer": true}', None, "observer unreachable: ValueError"),
        (b"not json", None, "observer unreachable: JSONDecodeError"),
    ],
)
def test_an_observer_that_fails_means_the_database_is_unreachable(payload: bytes, error: str | None,
                                                                  expected: str) -> None:  # fmt: skip
    obs = InvokedAurora(_Lambda(payload, error), "fn").observe()
    assert obs.reachable is False
    assert obs.error is not None
    assert obs.error.startswith(expected)


def test_the_observer_handler_takes_an_object_only() -> None:
    with pytest.raises(ValueError, match="takes a JSON object, not list"):
        aurora_app.lambda_handler([], LambdaContext("observer", "us-east-1"))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ wiring
@pytest.fixture
def deployed(aws_env: None) -> Iterator[dict[str, str]]:
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="tandem-ledger", BillingMode="PAY_PER_REQUEST", **ledger_table_keys()
        )
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="tandem-archive-primary")
        url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="q")["QueueUrl"]
        yield {**BASE_ENV, "TRANSACTION_QUEUE_URL": url, "AURORA_OBSERVER_FUNCTION": "no-such-observer",
               "PROBE_COUNT": "1", "AWS_LAMBDA_FUNCTION_NAME": "monitor"}  # fmt: skip


def test_the_handler_runs_the_monitor_and_answers_its_report(
    deployed: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app.build_monitor.cache_clear()
    clients.client.cache_clear()
    with function_environment(deployed):
        response = app.lambda_handler(load_event("monitor_scheduled.json"), LambdaContext("monitor", "us-east-1"))
    app.build_monitor.cache_clear()
    json.dumps(response)  # what make invoke prints
    assert response["region"] == "us-east-1"
    assert response["peer_region"] == "us-west-2"
    assert response["verdict"] == "not_ready"  # the observer function does not exist here
    assert response["reasons"][0] == "own_database_unreachable"
    assert response["dependencies"]["database"].startswith("observer unreachable")
    assert set(response["lag_seconds"]) == {"aurora", "dynamodb", "s3"}
    lines = emf_lines(capsys.readouterr().out)
    assert [line["Ready"] for line in lines if "Ready" in line] == [0.0]


def test_a_peer_region_equal_to_this_one_is_a_configuration_error(deployed: dict[str, str]) -> None:
    app.build_monitor.cache_clear()
    with function_environment({**deployed, "PEER_REGION": "us-east-1"}), pytest.raises(ConfigurationError):
        app.lambda_handler({}, LambdaContext("monitor", "us-east-1"))
    app.build_monitor.cache_clear()
