"""The operator commands' choices and printing (the handler's answers come from tests/twin)."""

from __future__ import annotations

import pytest

from tandem.operator import HandlerError, choose, describe, handler_name, run, timeline
from tandem.status import RegionTarget

PRIMARY = RegionTarget("us-east-1", "primary", "us-west-2", app_stack="tandem-app-primary")
DR = RegionTarget("us-west-2", "dr", "us-east-1", app_stack="tandem-app-dr")


@pytest.mark.parametrize(
    ("action", "region", "expected"),
    [
        ("failover", None, [DR]), ("switchover", None, [DR]), ("plan", None, [DR]), ("failback", None, [PRIMARY]),
        ("executions", None, [DR, PRIMARY]), ("failover", "us-east-1", [PRIMARY]),
    ],
)  # fmt: skip
def test_each_command_asks_the_region_it_concerns(
    action: str, region: str | None, expected: list[RegionTarget]
) -> None:
    assert choose(action, [PRIMARY, DR], region) == expected


def test_an_unknown_region_or_missing_stack_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match="--region eu-west-1: not one of us-east-1, us-west-2"):
        choose("failover", [PRIMARY, DR], "eu-west-1")
    with pytest.raises(HandlerError, match="no app stack known for us-west-2"):
        handler_name(RegionTarget("us-west-2", "dr"))
    assert handler_name(DR) == "tandem-app-dr-failover-handler"


def test_force_is_for_the_moves_only() -> None:
    with pytest.raises(ValueError, match="--force applies to failover, switchover and failback only"):
        run("reconcile", source=None, targets=[PRIMARY, DR], force=True)  # type: ignore[arg-type]


def test_the_timeline_is_a_table_of_steps_with_their_durations() -> None:
    execution = {"steps": [
        {"name": "promote_database", "started_at": 100.0, "finished_at": 101.25, "outcome": "completed",
         "detail": "promoted by failover"},
        {"name": "fence_peer_processing", "started_at": 100.0, "finished_at": 103.0, "outcome": "skipped",
         "detail": "EndpointConnectionError"},
    ]}  # fmt: skip
    lines = timeline(execution).splitlines()
    assert lines[0].split() == ["step", "started", "finished", "s", "outcome", "detail"]
    assert lines[2].split()[:5] == ["promote_database", "00:01:40.000Z", "00:01:41.250Z", "1.25", "completed"]
    assert lines[3].split()[3:5] == ["3.00", "skipped"]


def test_a_refusal_reads_as_one_line_with_every_reason() -> None:
    answer = {"region": "us-east-1", "outcome": "refused", "reasons": ["minimum_delay_not_passed", "not_caught_up"]}
    assert describe("failback", answer) == "failback to us-east-1 REFUSED: minimum_delay_not_passed, not_caught_up"
