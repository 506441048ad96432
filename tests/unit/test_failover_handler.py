"""The failover handler's entry point on moto: the event files in, the service's answer out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover_handler import app
from tandem.lambda_runtime import LambdaContext
from tandem_core.clients import client, peer_client
from tests.conftest import load_event
from tests.unit.failover_world import DR, PRIMARY, World, two_regions

CONTEXT = LambdaContext("failover", DR)


@pytest.fixture
def world(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with two_regions() as w:
        settings = w.settings()
        env = {field.alias: str(getattr(settings, name)) for name, field in type(settings).model_fields.items()
               if getattr(settings, name) is not None and field.alias}  # fmt: skip
        for key, value in {**env, "AWS_REGION": DR}.items():
            monkeypatch.setenv(key, value)
        for cached in (app.build_service, client, peer_client):
            cached.cache_clear()
        yield w
        app.build_service.cache_clear()


def test_plan_through_the_handler_reads_live_state_and_changes_nothing(world: World) -> None:
    reply = app.lambda_handler(load_event("failover_plan.json"), CONTEXT)
    assert reply["changed"] is False
    assert reply["plan"]["refused"] == ["no_readiness_record"]  # DR's monitor has not run here
    assert reply["control"]["active_region"] == PRIMARY
    assert world.writer() == PRIMARY


def test_status_through_the_handler(world: World) -> None:
    reply = app.lambda_handler(load_event("failover_status.json"), CONTEXT)
    assert (reply["region"], reply["control"]["epoch"], reply["executions"]) == (DR, 0, [])
    json.dumps(reply)  # what Lambda returns must serialise


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "failover", "force": "yes"}, "not an operator request: force"),
        ({**load_event("failover_alarm.json"), "detail-type": "Scheduled Event"}, "not an alarm state-change event"),
    ],
)
def test_a_bad_request_fails_in_one_line_before_anything_is_read(world: World, event: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        app.lambda_handler(event, CONTEXT)
    assert world.writer() == PRIMARY


def test_the_forced_failover_event_file_activates_dr(world: World) -> None:
    reply = app.lambda_handler(load_event("failover_failover_forced.json"), CONTEXT)
    assert reply["outcome"] == "completed"
    assert (world.writer(), world.processing(DR), world.processing(PRIMARY)) == (DR, "Enabled", "Disabled")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_ALARM = load_event("failover_alarm.json")
_EVENTS = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {"action": st.sampled_from(["plan", "failover", "switchover", "failback", "status", "reconcile", ""]) | _JSON},
        optional={"force": st.booleans() | _JSON},
    ),
    st.builds(lambda key, value: {**_ALARM, key: value}, st.sampled_from(sorted(_ALARM)), _JSON),
    st.builds(lambda value: {**_ALARM, "detail": {**_ALARM["detail"], "state": value}}, _JSON),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_EVENTS, min_size=1, max_size=4))
def test_any_event_is_an_answer_or_one_clear_error_and_the_control_record_stays_consistent(
    world: World, events: list[Any]
) -> None:
    for event in events:
        try:
            reply = app.lambda_handler(event, CONTEXT)
        except ValueError as exc:
            assert "\n" not in str(exc)
            continue
        json.dumps(reply)
        control = app.build_service().status()["control"]
        assert control["state"] == "idle"  # every run that took the lock finished it: nothing left half-done
        assert control["active_region"] in {PRIMARY, DR}
        assert (world.writer() == DR) == (control["active_region"] == DR)  # the fence and the writer agree
