"""The failover handler's input: the alarm event AWS sends, the operator's actions, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover_handler.events import Action, parse_request
from tests.conftest import load_event


def test_the_alarm_event_is_an_automatic_failover_with_both_states() -> None:
    request = parse_request(load_event("failover_alarm.json"))
    assert (request.action, request.trigger, request.force) == (Action.FAILOVER, "alarm", False)
    assert (request.alarm_state, request.previous_alarm_state) == ("ALARM", "OK")
    assert request.alarm_name == "tandem-app-dr-peer-region-impaired"
    assert request.event_id == "5b1c3f0e-7a9d-4e21-9c47-2f6d8a1b0c93"
    assert request.automatic


@pytest.mark.parametrize(
    ("name", "action", "force"),
    [
        ("failover_plan.json", Action.PLAN, False),
        ("failover_failover.json", Action.FAILOVER, False),
        ("failover_failover_forced.json", Action.FAILOVER, True),
        ("failover_switchover.json", Action.SWITCHOVER, False),
        ("failover_failback.json", Action.FAILBACK, False),
        ("failover_status.json", Action.STATUS, False),
    ],
)
def test_each_operator_event_file_is_its_action(name: str, action: Action, force: bool) -> None:
    request = parse_request(load_event(name))
    assert (request.action, request.trigger, request.force, request.automatic) == (action, "operator", force, False)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "takes a JSON object (an alarm event or an action), not list"),
        ({}, "not an operator request: action: Field required"),
        ({"action": "promote"}, "not an operator request: action: Input should be"),
        ({"action": "status", "force": True}, "force applies to failover, switchover and failback only, not status"),
        ({"action": "failover", "force": "yes please"}, "not an operator request: force"),
        ({"action": "failover", "force": "yes"}, "not an operator request: force: Input should be a valid boolean"),
        ({"action": "failover", "force": 1}, "not an operator request: force: Input should be a valid boolean"),
        ({"action": "failover", "region": "us-east-1"}, "not an operator request: region: Extra inputs"),
        ({**load_event("failover_alarm.json"), "source": "aws.events"}, "not an alarm state-change event: source"),
        (
            {**load_event("failover_alarm.json"), "detail": {"alarmName": "x"}},
            "not an alarm state-change event: detail",
        ),
    ],
)
def test_anything_else_is_refused_in_one_line_naming_what_is_wrong(event: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        parse_request(event)
    assert "\n" not in str(refused.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_is_a_request_or_one_clear_line(event: Any) -> None:
    try:
        request = parse_request(event)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert request.action in set(Action)


@given(
    st.fixed_dictionaries(
        {"source": st.just("aws.cloudwatch") | json_values},
        optional={k: json_values for k in ("detail-type", "id", "time", "region", "detail")},
    )
)
def test_anything_shaped_like_an_event_is_an_alarm_or_refused(event: dict[str, Any]) -> None:
    try:
        request = parse_request(event)
    except ValueError as exc:
        assert str(exc).startswith("not an alarm state-change event")
    else:
        assert request.trigger == "alarm"
