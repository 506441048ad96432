"""The twin's grey faults as pure logic: outage kinds, what Route53 sees of an ingress, slow or failing promotions,
and how the control API and the CLI take them (the twin itself: tests/twin/test_twin_grey_faults.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from werkzeug.test import Client

from tandem.cli import main
from tandem.twin.clock import TwinClock
from tandem.twin.control_api import ControlApi
from tandem.twin.extensions.rds_global import PromotionRequest
from tandem.twin.outages import KINDS, Outages, ingress_answers, outage_kind
from tandem.twin.promotions import Promotions, check_delay

REQUEST = PromotionRequest("g", "arn:from", "arn:to", "us-west-2", "switchover")


# ---------------------------------------------------------------------------------------------- outages


def test_only_names_a_part_and_none_is_the_whole_region() -> None:
    assert [outage_kind(only) for only in (None, "database", "ingress", "functions")] == list(KINDS)
    for bad in ("region", "disk", "", "Database"):
        with pytest.raises(ValueError, match="must be one of database, ingress, functions"):
            outage_kind(bad)


def test_one_outage_per_region_and_restore_needs_one() -> None:
    outages = Outages()
    with pytest.raises(ValueError, match=r"^us-east-1 is not down; nothing to restore$"):
        outages.require("us-east-1")
    outages.begin("us-east-1", "database")
    outages.begin("us-west-2", "region")
    with pytest.raises(ValueError, match=r"^us-east-1 already has an outage \(database only\); restore it first$"):
        outages.begin("us-east-1", "ingress")
    with pytest.raises(ValueError, match=r"^us-west-2 is already down$"):
        outages.begin("us-west-2", "functions")
    assert (outages.require("us-east-1"), outages.of("us-west-2")) == ("database", "region")
    outages.end("us-east-1")
    assert outages.of("us-east-1") is None
    outages.begin("us-east-1", "functions")  # free again
    with pytest.raises(ValueError, match="an outage is one of"):
        outages.begin("eu-west-1", "disk")


@pytest.mark.parametrize(
    ("outage", "partitioned", "answers"),
    [
        (None, False, True),
        ("database", False, True),  # GET /health does not read the database
        ("region", False, False),
        ("ingress", False, False),
        ("functions", False, False),  # the route's function fails: 5xx
        (None, True, False),  # cut off from the internet, so from Route53's checkers
    ],
)
def test_what_route53s_checkers_get_from_an_ingress(outage: str | None, partitioned: bool, answers: bool) -> None:
    assert ingress_answers(outage, partitioned=partitioned) is answers


# ---------------------------------------------------------------------------------------------- promotions


class Moves:
    def __init__(self, error: Exception | None = None) -> None:
        self.seen: list[tuple[str, float]] = []
        self.error = error

    def __call__(self, request: PromotionRequest) -> None:
        self.seen.append((request.to_region, time.monotonic()))
        if self.error is not None:
            raise self.error


def test_without_faults_the_move_runs_in_the_call() -> None:
    moves = Moves()
    assert Promotions(TwinClock(), moves)(REQUEST) is None
    assert [region for region, _ in moves.seen] == ["us-west-2"]


def test_failing_promotions_err_in_turn_without_moving() -> None:
    moves = Moves()
    promotions = Promotions(TwinClock(), moves)
    promotions.fail(2)
    for left in (1, 0):
        with pytest.raises(RuntimeError, match="injected fault: the switchover to us-west-2 failed"):
            promotions(REQUEST)
        assert promotions.to_fail == left
    assert moves.seen == []
    assert promotions(REQUEST) is None
    assert len(moves.seen) == 1


def test_a_delayed_promotion_is_accepted_now_and_moves_after_the_delay_on_the_twin_clock() -> None:
    moves = Moves()
    promotions = Promotions(TwinClock(scale=100.0), moves)  # 30 emulated seconds: 0.3 s
    promotions.delay(30)
    asked = time.monotonic()
    pending = promotions(REQUEST)
    assert pending is not None
    assert not pending.done()
    assert moves.seen == []
    assert promotions.delay_seconds == 0.0  # the next promotion only
    moving = promotions.in_progress
    assert moving is not None
    assert (moving["mode"], moving["to_region"]) == ("switchover", "us-west-2")
    pending.result(timeout=5)
    assert moves.seen[0][1] - asked >= 0.3 - 0.01
    assert promotions.in_progress is None
    assert promotions(REQUEST) is None  # no delay left


def test_a_delayed_move_that_fails_fails_the_future() -> None:
    promotions = Promotions(TwinClock(scale=1000.0), Moves(RuntimeError("us-west-2 is down")))
    promotions.delay(1)
    pending = promotions(REQUEST)
    assert pending is not None
    with pytest.raises(RuntimeError, match="us-west-2 is down"):
        pending.result(timeout=5)


def test_stopping_the_twin_cancels_a_delayed_promotion_not_yet_due() -> None:
    moves = Moves()
    promotions = Promotions(TwinClock(), moves)
    promotions.delay(3600)
    pending = promotions(REQUEST)
    assert pending is not None
    promotions.stop()
    assert pending.cancelled()
    assert promotions.in_progress is None
    assert not any(t.name == "twin-promotion" and t.is_alive() for t in threading.enumerate())
    assert moves.seen == []
    promotions.delay(5)
    with pytest.raises(RuntimeError, match="stopping"):
        promotions(REQUEST)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "3", None])
def test_a_delay_is_a_finite_number_of_seconds_at_least_zero(bad: Any) -> None:
    with pytest.raises(ValueError, match="finite number of emulated seconds >= 0"):
        check_delay(bad)
    assert check_delay(0) == 0.0
    assert check_delay(2.5) == 2.5


# ---------------------------------------------------------------------------------------------- control API


class FakeTwin:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def outage(self, region: str, only: str | None = None) -> None:
        self.calls.append(("outage", (region, outage_kind(only))))

    def fail_promotions(self, count: int) -> None:
        self.calls.append(("fail", count))

    def delay_promotion(self, seconds: float) -> None:
        self.calls.append(("delay", seconds))


def _post(path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    twin = FakeTwin()
    client = Client(ControlApi(twin, threading.Event()))  # type: ignore[arg-type]  # the routes used here only
    reply = client.post(path, data=b"" if body is None else json.dumps(body))
    return reply.status_code, json.loads(reply.data)


@pytest.mark.parametrize(
    ("body", "calls"),
    [
        (None, [["outage", ["us-east-1", "region"]]]),
        ({"only": "ingress"}, [["outage", ["us-east-1", "ingress"]]]),
        ({"only": None}, [["outage", ["us-east-1", "region"]]]),
    ],
)
def test_the_control_api_takes_an_outage_of_one_part(body: Any, calls: list[Any]) -> None:
    assert _post("/outage/us-east-1", body) == (200, {"calls": calls})


@pytest.mark.parametrize("body", [{"only": 3}, {"only": "disk"}, ["database"]])
def test_the_control_api_refuses_an_outage_it_cannot_stage(body: Any) -> None:
    code, reply = _post("/outage/us-east-1", body)
    assert code == 400
    assert "only must be" in reply["error"] or "must be a JSON object" in reply["error"]


@pytest.mark.parametrize(
    ("body", "calls"),
    [
        (None, [["fail", 1]]),  # as before: the next promotion fails
        ({"fail": 0}, [["fail", 0]]),
        ({"delay_seconds": 90}, [["delay", 90.0]]),
        ({"fail": 2, "delay_seconds": 0}, [["fail", 2], ["delay", 0.0]]),
    ],
)
def test_the_control_api_sets_promotion_faults(body: Any, calls: list[Any]) -> None:
    assert _post("/faults/promotion", body) == (200, {"calls": calls})


@pytest.mark.parametrize("body", [{"delay_seconds": -1}, {"delay_seconds": "ten"}, {"fail": 1, "delay_seconds": None}])
def test_a_bad_delay_is_refused_and_sets_nothing(body: Any) -> None:
    code, reply = _post("/faults/promotion", body)
    assert code == 400
    assert "finite number of emulated seconds >= 0" in reply["error"]
    assert "calls" not in reply


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["outage", "us-east-1", "--only", "disk"], "argument --only: invalid choice: 'disk'"),
        (["fault", "promotion", "--delay", "nan"], "must be a finite number of seconds >= 0"),
        (["fault", "promotion", "--delay", "-5"], "must be a finite number of seconds >= 0"),
        (["fault", "promotion", "--delay", "soon"], "is not a number of seconds"),
    ],
)
def test_the_cli_refuses_bad_fault_input_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["twin", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
