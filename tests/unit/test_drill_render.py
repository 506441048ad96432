"""The drill's human artifacts: a Markdown page and a timeline PNG beside the JSON report."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from tandem.drill.render import (
    DPI,
    FIGURE_SIZE,
    artifact_paths,
    bin_width,
    write_artifacts,
    write_markdown,
    write_timeline_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIMELINE: list[dict[str, Any]] = [
    {"event": "us-east-1 down", "at": 0.0},
    {"event": "failover: shift_dns completed", "at": 69.9, "started": 69.0},
    {"event": "failover: notify completed", "at": 70.8, "started": 69.2},
    {"event": "failover: fence_peer_processing skipped", "at": 71.5, "started": 69.0},
    {"event": "failover: promote_database completed", "at": 79.4, "started": 68.8},
    {"event": "failover: enable_processing completed", "at": 81.8, "started": 80.5},
    {"event": "us-east-1 back", "at": 361.6},
    {"event": "reconcile: stranded completed", "at": 380.2, "started": 379.5},
    {"event": "reconcile: redrive_dlq:us-west-2 completed", "at": 380.8, "started": 380.2},
    {"event": "reconcile: journal completed", "at": 387.4, "started": 381.2},
    {"event": "reconcile: never finished", "at": None},
]
INVARIANTS = [
    "committed_equals_valid",
    "no_duplicates_applied",
    "rejected_equals_poison",
    "nothing_lost",
    "one_completed_failover",
    "nothing_lost_after_reconcile",
]


def region_loss_report() -> dict[str, Any]:
    """Shaped like a real region-loss report (/tmp/d60_1.json) with the series the drill adds."""
    rng = random.Random(7)
    east = sorted(rng.uniform(-30.0, 0.0) for _ in range(67))
    west = sorted(rng.uniform(150.0, 420.0) for _ in range(133))
    return {
        "drill": "twin, two regions",
        "scenario": "region-loss",
        "passed": True,
        "completed": True,
        "wall_seconds": 43.768,
        "twin": {"region": "us-east-1", "clock_scale": 60.0, "started_by_drill": True, "startup_seconds": 4.4},
        "workload": {"sent": 225, "valid": 200, "poison": 5, "duplicates": 20, "accepted": 225},
        "result": {
            "committed": 200,
            "duplicates_applied": 0,
            "rejected": 5,
            "lost": 0,
            "lost_before_reconcile": 3,
            "lost_after_reconcile": 1,
            "reconciled": 2,
        },
        "invariants": dict.fromkeys(INVARIANTS, True),
        "failover": {
            "clock_scale": 60.0,
            "executions": 1,
            "outcome": "completed",
            "mode": "failover",
            "detection_seconds": 66.4,
            "rto_seconds": 155.2,
            "rpo_seconds": 12.5,
            "rpo_transactions": 3,
            "rpo_estimate_seconds": None,
            "expected": "one completed failover",
            "timeline": copy.deepcopy(TIMELINE),
            "reconcile": {
                "region": "us-west-2",
                "old_region": "us-east-1",
                "stranded": {"moved": 4.0, "refused": 0.0, "errors": []},
                "dlq": {
                    "us-west-2": {"redriven": 0.0, "left": [], "errors": []},
                    "us-east-1": {
                        "redriven": 1.0,
                        "errors": [],
                        "left": [{"message_id": "m-poison-1", "reason": "invalid: amount is not a number"}],
                    },
                },
                "journal": {
                    "objects": 17.0,
                    "lines": 40.0,
                    "reapplied": 2.0,
                    "reapplied_ids": ["t-101", "t-102"],
                    "already_held": 37.0,
                    "errors": [],
                    "could_not": [{"message_id": "m-9", "transaction_id": "t-103", "reason": "ledger | refused it"}],
                },
                "complete": True,
            },
        },
        "producers": {
            "count": 4,
            "accepted_by_region": {"us-east-1": 67, "us-west-2": 158},
            "gave_up": 0,
            "failed_attempts": 11,
        },
        "series": {
            "clock_scale": 60.0,
            "zero_label": "outage start",
            "window": [-30.0, 420.0],
            "commits": {"us-east-1": east, "us-west-2": west},
            "outage": [0.0, 361.6],
            "dns": [[-30.0, "us-east-1"], [70.0, "us-west-2"]],
            "lag": {
                "aurora": [[t, 0.5 + 0.1 * (t % 3)] for t in range(-30, 1, 10)],
                "dynamodb": [[t, 1.0] for t in range(-30, 400, 30)],
                "s3": [[-30, 8.0], [0, 12.0], [380, None], [390, 30.0]],
            },
        },
    }


def blip_report() -> dict[str, Any]:
    """A blip: the alarm never decided, nothing executed, nothing reconciled; the series are empty or None."""
    return {
        "scenario": "blip",
        "passed": True,
        "wall_seconds": None,
        "twin": {"region": "us-east-1", "clock_scale": None},
        "workload": {"sent": 50, "valid": 50, "poison": 0, "duplicates": 0},
        "result": {"committed": 50, "lost": 0, "lost_before_reconcile": None, "reconciled": None},
        "invariants": {"committed_equals_valid": True, "no_failover": True},
        "failover": {
            "clock_scale": None,
            "executions": 0,
            "outcome": None,
            "mode": None,
            "detection_seconds": None,
            "rto_seconds": None,
            "rpo_seconds": None,
            "rpo_transactions": None,
            "timeline": [],
            "reconcile": {},
        },
        "series": {
            "clock_scale": None,
            "zero_label": None,
            "window": None,
            "commits": {"us-east-1": []},
            "outage": None,
            "dns": [],
            "lag": {"aurora": None, "s3": [[None, None]]},
        },
    }


def write_json(tmp_path: Path, name: str = "drill-run.json") -> Path:
    path = tmp_path / "reports" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n", encoding="utf-8")
    return path


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    width, height = FIGURE_SIZE
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert (image != image[0, 0]).any(axis=-1).any()  # more than one colour: something was drawn


def test_artifact_paths_sit_beside_the_json_report(tmp_path: Path) -> None:
    json_path = tmp_path / "drill-20250101T000000Z-abc.json"

    assert artifact_paths(json_path) == (
        tmp_path / "drill-20250101T000000Z-abc.md",
        tmp_path / "drill-20250101T000000Z-abc.timeline.png",
    )
    assert artifact_paths(json_path, "blip") == (
        tmp_path / "drill-20250101T000000Z-abc.md",
        tmp_path / "drill-20250101T000000Z-abc.blip.timeline.png",
    )


def test_region_loss_report_gives_a_page_with_the_numbers_and_a_timeline_png(tmp_path: Path) -> None:
    report = region_loss_report()
    json_path = write_json(tmp_path)

    written = write_artifacts(report, json_path)

    md, png = artifact_paths(json_path)
    assert written == {"markdown": str(md), "timeline_png": str(png)}
    assert report["artifacts"] == written
    text = md.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("# ✅ PASSED")
    assert "155.2 s" in text  # RTO
    assert "66.4 s" in text  # detection
    assert "12.5 s / 3 transaction(s)" in text  # RPO, seconds and transactions
    assert "the twin ran at x60" in text
    for name in INVARIANTS:
        assert f"- [x] ✅ `{name}`" in text
    for event in TIMELINE:
        assert str(event["event"]) in text
    assert "| failover: promote_database completed | 79.4 | 68.8 |" in text
    assert "| reconcile: never finished | — | — |" in text
    assert "lost before reconciliation: **3**" in text
    assert "brought back by reconciliation: **2**" in text
    assert "lost after reconciliation: **1**" in text
    assert "`t-101`, `t-102`" in text
    assert "| journal | t-103 | ledger \\| refused it |" in text  # a pipe in a reason does not split the row
    assert "| DLQ us-east-1 | m-poison-1 | invalid: amount is not a number |" in text
    assert "us-east-1 67, us-west-2 158" in text
    assert f"![timeline of the drill]({png.name})" in text  # relative: the page and the picture move together
    assert_png(png)


def test_a_failed_report_says_failed_and_marks_the_failing_invariant(tmp_path: Path) -> None:
    report = region_loss_report()
    report["passed"] = False
    report["invariants"]["nothing_lost_after_reconcile"] = False
    md = tmp_path / "failed.md"

    write_markdown(report, md, None)

    text = md.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("# ❌ FAILED")
    assert "PASSED" not in text
    assert "- [ ] ❌ `nothing_lost_after_reconcile` — **failed**" in text
    assert "- [x] ✅ `nothing_lost`" in text
    assert "1 of 6 invariants do not hold: `nothing_lost_after_reconcile`" in text
    assert "![timeline" not in text  # no picture, no link


def test_the_scenarios_notes_end_its_section_and_a_report_without_notes_has_none(tmp_path: Path) -> None:
    report = region_loss_report()
    report["notes"] = ["1 page(s); us-west-2's readiness reasons: ['aurora_lag_above_budget_before_peer_lost']"]
    md = tmp_path / "notes.md"
    write_markdown(report, md, None)
    text = md.read_text(encoding="utf-8")
    assert text.rstrip().endswith(
        "- 1 page(s); us-west-2's readiness reasons: ['aurora_lag_above_budget_before_peer_lost']"
    )
    write_markdown({**report, "notes": []}, md, None)
    assert "## Notes" not in md.read_text(encoding="utf-8")


def test_a_blip_with_no_execution_and_empty_series_still_gives_both_files(tmp_path: Path) -> None:
    json_path = write_json(tmp_path, "blip.json")

    written = write_artifacts(blip_report(), json_path)

    text = Path(written["markdown"]).read_text(encoding="utf-8")
    assert "No reconciliation ran." in text
    assert "No timeline was recorded." in text
    assert "clock scale was not recorded" in text
    assert_png(Path(written["timeline_png"]))


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"scenario": "steady", "passed": True, "twin": {"clock_scale": 600.0}, "series": None},
        {"scenario": "region-loss", "passed": False, "failover": None, "series": {"commits": None, "dns": None}},
        {"scenario": "region-loss", "series": {"window": [5, 5], "outage": [0.0, None], "dns": [[1.0, None]]}},
        {"scenario": "x", "series": {"window": ["a", None], "commits": {"r": [1.0, "x", None, float("nan")]}}},
    ],
    ids=["empty", "steady", "none-series", "open-outage", "garbage-values"],
)
def test_missing_or_none_keys_never_break_rendering(tmp_path: Path, report: dict[str, Any]) -> None:
    md, png = tmp_path / "r.md", tmp_path / "r.png"

    write_timeline_png(report, png)
    write_markdown(report, md, png)

    assert md.read_text(encoding="utf-8").startswith("# ")
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_steady_report_says_there_was_no_failover(tmp_path: Path) -> None:
    report = region_loss_report()
    report["scenario"] = "steady"
    del report["failover"]
    md = tmp_path / "steady.md"

    write_markdown(report, md, None)

    assert "No failover in this scenario." in md.read_text(encoding="utf-8")


def test_an_all_report_gives_one_page_with_a_row_per_scenario_and_a_png_per_scenario(tmp_path: Path) -> None:
    failed = region_loss_report()
    failed["scenario"] = "switchover"
    failed["passed"] = False
    failed["invariants"]["one_completed_failover"] = False
    scenarios = {"region-loss": region_loss_report(), "switchover": failed, "blip": blip_report()}
    report: dict[str, Any] = {"scenario": "all", "passed": False, "wall_seconds": 120.5, "scenarios": scenarios}
    json_path = write_json(tmp_path, "drill-all.json")

    written = write_artifacts(report, json_path)

    md = artifact_paths(json_path)[0]
    pngs = [artifact_paths(json_path, name)[1] for name in scenarios]
    assert written == {"markdown": str(md), "timeline_png": [str(p) for p in pngs]}
    assert report["artifacts"] == written
    for sub, png in zip(scenarios.values(), pngs, strict=True):
        assert sub["artifacts"] == {"markdown": str(md), "timeline_png": str(png)}
        assert_png(png)
    text = md.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("# ❌ FAILED")
    assert "**2 of 3 scenarios passed**" in text
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [row.split("]")[0] for row in rows] == ["| [region-loss", "| [switchover", "| [blip"]
    assert (
        "| [region-loss](#region-loss) | ✅ PASSED | 66.4 | 155.2 | 12.5 s / 3 transaction(s) | 3 → 1 | 43.8 |" in rows
    )
    assert "| [switchover](#switchover) | ❌ FAILED |" in rows[1]
    for name, png in zip(scenarios, pngs, strict=True):
        assert f"## {name}" in text
        assert f"![timeline of the drill]({png.name})" in text
    assert "- [ ] ❌ `one_completed_failover` — **failed**" in text
    assert len(list(md.parent.glob("*.md"))) == 1


@pytest.mark.parametrize("window", [0.5, 30.0, 190.0, 450.0, 930.0, 3600.0, 86_400.0])
def test_bin_width_gives_40_to_80_bins(window: float) -> None:
    assert 40 <= window / bin_width(window) <= 80
