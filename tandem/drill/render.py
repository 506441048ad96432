"""A drill report, for people: where the Markdown page and the timeline PNG go beside the JSON report.

The JSON is the record machines read; these two are what a person opens after a drill. This module places and
writes them; :mod:`tandem.drill.page` composes the page and :mod:`tandem.drill.timeline` draws the picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem.drill.page import LISTED, write_markdown
from tandem.drill.timeline import (
    DPI,
    EVENT_COLOURS,
    FIGURE_SIZE,
    LAG_COLOURS,
    NICE_WIDTHS,
    REGION_COLOURS,
    TARGET_BINS,
    bin_width,
    write_timeline_png,
)
from tandem.drill.values import DASH, scenarios_of

__all__ = [
    "DASH",
    "DPI",
    "EVENT_COLOURS",
    "FIGURE_SIZE",
    "LAG_COLOURS",
    "LISTED",
    "NICE_WIDTHS",
    "REGION_COLOURS",
    "TARGET_BINS",
    "artifact_paths",
    "bin_width",
    "write_artifacts",
    "write_markdown",
    "write_timeline_png",
]


def artifact_paths(json_path: Path, scenario: str | None = None) -> tuple[Path, Path]:
    """(markdown, png) beside the JSON report, so the three travel together: ``<stem>.md`` and
    ``<stem>.timeline.png``; for one scenario of an ``all`` run ``<stem>.<scenario>.timeline.png`` (the run
    keeps one page for all its scenarios)."""
    json_path = Path(json_path)
    stem = json_path.stem
    png = f"{stem}.{scenario}.timeline.png" if scenario else f"{stem}.timeline.png"
    return json_path.with_name(f"{stem}.md"), json_path.with_name(png)


def write_artifacts(report: dict[str, Any], json_path: Path) -> dict[str, Any]:
    """Write the page and the picture(s) beside ``json_path`` and record where in ``report["artifacts"]`` (and,
    for ``all``, in each scenario's report), so the caller can re-write the JSON with the paths in it.

    Returns ``{"markdown": str, "timeline_png": str}``; for ``all`` ``timeline_png`` is the list of every
    scenario's PNG (each scenario's own path is in its report's ``artifacts``).
    """
    md_path, png_path = artifact_paths(json_path)
    scenarios = scenarios_of(report)
    if scenarios is None:
        write_timeline_png(report, png_path)
        write_markdown(report, md_path, png_path)
        artifacts: dict[str, Any] = {"markdown": str(md_path), "timeline_png": str(png_path)}
        report["artifacts"] = artifacts
        return dict(artifacts)
    pngs: list[str] = []
    for name, sub in scenarios.items():
        if not isinstance(sub, dict):
            continue
        png = artifact_paths(json_path, name)[1]
        write_timeline_png(sub, png)
        sub["artifacts"] = {"markdown": str(md_path), "timeline_png": str(png)}
        pngs.append(str(png))
    write_markdown(report, md_path, None)
    report["artifacts"] = {"markdown": str(md_path), "timeline_png": list(pngs)}
    return {"markdown": str(md_path), "timeline_png": list(pngs)}
