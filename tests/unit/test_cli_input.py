"""Hostile command lines get one clear line and exit 2 before anything starts (no twin, no report, no socket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.cli import main
from tandem.drill import DrillError, report_destination
from tandem.twin.twin import TwinConfig


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "0", "-1", "ten"])
def test_scale_must_be_a_finite_positive_number(capsys: pytest.CaptureFixture[str], value: str) -> None:
    err = _refused(capsys, "twin", "up", "--scale", value)
    assert "argument --scale" in err


@pytest.mark.parametrize("flag", ["--primary", "--dr"])
def test_regions_must_exist_in_the_aws_partition(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert "'mars-1' is not an AWS region" in _refused(capsys, "twin", "up", flag, "mars-1")
    assert "aws-cn partition" in _refused(capsys, "twin", "up", flag, "cn-north-1")


def test_invoke_region_is_checked_too(capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(capsys, "invoke", "transaction_processor", "events/sqs_valid_batch.json", "--region", "us-east-9")
    assert "'us-east-9' is not an AWS region" in err


def test_the_same_region_twice_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["twin", "--state-dir", str(tmp_path), "up", "--primary", "eu-west-1", "--dr", "eu-west-1"])
    assert code == 2
    assert "two different regions (both are eu-west-1)" in capsys.readouterr().err
    assert not (tmp_path / "twin.lock").exists()  # refused before any start-up


@pytest.mark.parametrize(
    ("primary", "dr", "scale", "message"),
    [
        ("us-east-1", "us-east-1", 1.0, "must differ"),
        ("us-east-1", "moon-1", 1.0, "not an AWS region"),
        ("us-east-1", "us-west-2", float("nan"), "finite number"),
        ("us-east-1", "us-west-2", float("inf"), "finite number"),
    ],
)
def test_the_daemon_checks_its_configuration_as_well(
    tmp_path: Path, primary: str, dr: str, scale: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TwinConfig(tmp_path, primary, dr, scale)


def test_an_unwritable_report_path_is_refused_before_the_drill(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["drill", "--transactions", "5", "--report", str(blocker / "report.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot write the report to {blocker / 'report.json'}" in err
    assert err.count("\n") == 1


def test_a_directory_is_not_a_report_path(tmp_path: Path) -> None:
    with pytest.raises(DrillError, match="is a directory"):
        report_destination(tmp_path, "0" * 32)


def test_default_report_names_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = report_destination(None, "a" * 32)
    second = report_destination(None, "b" * 32)
    assert first != second
    assert first.parent == second.parent == Path("reports")
    assert not first.exists()  # checked writable, nothing left behind until the drill writes it


def test_the_cli_offers_exactly_the_drills_scenarios() -> None:
    from tandem.cli import DRILL_SCENARIOS
    from tandem.drill import SCENARIOS

    assert set(DRILL_SCENARIOS) == set(SCENARIOS)
    assert {"region-loss", "switchover", "blip", "dr-not-ready", "all"} <= set(SCENARIOS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "earthquake"], "argument --scenario: invalid choice"),
        (["--outage-for", "0"], "argument --outage-for"),
        (["--outage-for", "nan"], "argument --outage-for"),
        (["--rate", "-1"], "argument --rate"),
        (["--rate", "inf"], "argument --rate"),
        (["--producers", "x"], "argument --producers"),
    ],
)
def test_drill_options_are_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in _refused(capsys, "drill", *argv)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outage_at": 1.5}, "--outage-at is a fraction"),
        ({"outage_for": 0.0}, "--outage-for must be > 0"),
        ({"producers": 0}, "--producers must be at least 1"),
        ({"rate": -2.0}, "--rate must be"),
    ],
)
def test_scenario_options_refuse_what_cannot_be_run(kwargs: dict[str, float], message: str) -> None:
    from tandem.drill.scenarios import ScenarioOptions

    with pytest.raises(ValueError, match=message):
        ScenarioOptions(**kwargs)  # type: ignore[arg-type]


def test_a_zero_producer_count_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["drill", "--producers", "0", "--report", str(tmp_path / "r.json")])
    assert code == 2
    assert "--producers must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
