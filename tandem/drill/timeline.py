"""The drill's timeline PNG: the run on one emulated-time axis.

Commits per second in each region, the outage, the failover's and reconciliation's steps, where DNS pointed the
producers, and the replication lag the monitor measured. Drawn on a :class:`matplotlib.figure.Figure` with the
Agg canvas, without pyplot: no global state, no display, safe in a thread of the drill. Missing or empty series
draw as empty panels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tandem.drill.values import as_dict, as_float, as_list, clock_scale, num, rpo, secs

REGION_COLOURS = ("#1f77b4", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LAG_COLOURS = ("#2ca02c", "#9467bd", "#d62728", "#17becf", "#8c564b")
EVENT_COLOURS = {"down": "#d62728", "back": "#2ca02c", "failover": "#6a3d9a", "switchover": "#6a3d9a",
                 "reconcile": "#00897b", "alarm": "#000000"}  # fmt: skip
NICE_WIDTHS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)  # x 10^k: a histogram bin width people can read
TARGET_BINS = 60  # ~40-80 bins over the window
FIGURE_SIZE = (12.0, 7.5)  # inches
DPI = 100


def write_timeline_png(report: dict[str, Any], path: Path) -> Path:
    """The run on one emulated-time axis: commits per second per region over the outage, the steps that moved
    it, where DNS sent the producers, and the replication lag. Empty or missing series draw as empty panels."""
    path = Path(path)
    series = as_dict(report.get("series"))
    commits = {str(k): _numbers(v) for k, v in as_dict(series.get("commits")).items()}
    outage = _span(series.get("outage"))
    dns = [(t, None if region is None else str(region)) for t, region in _pairs(series.get("dns"), keep_none=True)]
    lag = {str(k): _points(v) for k, v in as_dict(series.get("lag")).items()}
    events = [(at, str(e.get("event") or "")) for e in as_list(as_dict(report.get("failover")).get("timeline"))
              if isinstance(e, dict) and (at := as_float(e.get("at"))) is not None]  # fmt: skip
    lo, hi = _window(series.get("window"), commits, outage, dns, lag, events)

    regions = _regions(report, commits, dns)
    colour = {region: REGION_COLOURS[i % len(REGION_COLOURS)] for i, region in enumerate(regions)}

    fig = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 1, height_ratios=(5.0, 0.7, 2.3), hspace=0.12)
    ax_commits = fig.add_subplot(grid[0])
    ax_dns = fig.add_subplot(grid[1], sharex=ax_commits)
    ax_lag = fig.add_subplot(grid[2], sharex=ax_commits)
    axes = (ax_commits, ax_dns, ax_lag)

    for ax in axes:
        if outage is not None:
            ax.axvspan(max(outage[0], lo), min(outage[1], hi), color="#d62728", alpha=0.10, lw=0, zorder=0)
        for at, name in events:
            if lo <= at <= hi:
                ax.axvline(at, color=_event_colour(name), lw=0.9, alpha=0.8, ls="--", zorder=1)
        ax.grid(axis="x", alpha=0.25)
    ax_commits.set_xlim(lo, hi)

    _draw_commits(ax_commits, commits, colour, lo, hi, outage)
    _draw_event_labels(ax_commits, events, lo, hi)
    _draw_dns(ax_dns, dns, colour, lo, hi)
    _draw_lag(ax_lag, lag)
    for ax in (ax_commits, ax_dns):
        ax.tick_params(labelbottom=False)

    scale = clock_scale(report)
    zero = series.get("zero_label")
    ax_lag.set_xlabel(
        "emulated seconds" + (f" from {zero}" if zero else "") + (f" (twin clock x{scale:g})" if scale else "")
    )
    verdict = "PASSED" if report.get("passed") is True else "FAILED"
    fig.suptitle(f"{report.get('scenario') or 'drill'}: {verdict}", fontsize=15, fontweight="bold",
                 color="#2ca02c" if verdict == "PASSED" else "#d62728", y=0.985)  # fmt: skip
    fig.text(0.5, 0.935, _subtitle(report), ha="center", va="center", fontsize=9, color="#444444")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.91, bottom=0.08)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    tmp.replace(path)
    return path


def _draw_commits(ax: Axes, commits: dict[str, list[float]], colour: dict[str, str], lo: float, hi: float,
                  outage: tuple[float, float] | None) -> None:  # fmt: skip
    width = bin_width(hi - lo)
    edges = [lo + i * width for i in range(math.ceil((hi - lo) / width) + 1)]
    handles: list[Any] = []
    for region, times in commits.items():
        counts = [0] * (len(edges) - 1)
        for t in times:
            if lo <= t <= hi:
                counts[min(int((t - lo) // width), len(counts) - 1)] += 1
        rates = [n / width for n in counts]
        ax.stairs(rates, edges, fill=True, color=colour[region], alpha=0.45, lw=0)
        ax.stairs(rates, edges, color=colour[region], lw=1.2)
        handles.append(Patch(color=colour[region], alpha=0.6, label=f"{region}: {len(times)} commits"))
    if not any(commits.values()):
        ax.text(0.5, 0.5, "no commits recorded", transform=ax.transAxes, ha="center", va="center", color="#888888")
        ax.set_yticks([])
    if outage is not None:
        handles.append(Patch(color="#d62728", alpha=0.15, label="outage"))
    ax.set_ylabel(f"commits / emulated s\n(bins of {width:g} s)")
    ax.set_ylim(bottom=0)
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.45 if top > 0 else 1.0)  # head room for the step labels
    if handles:
        ax.legend(handles=handles, loc="center right", fontsize=8, framealpha=0.85)


def _draw_event_labels(ax: Axes, events: list[tuple[float, str]], lo: float, hi: float) -> None:
    gap = (hi - lo) * 0.014  # labels of steps close in time are pushed apart, the lines stay where they were
    last = -math.inf
    for at, name in sorted(events):
        if not lo <= at <= hi:
            continue
        x = max(at, last + gap)
        last = x
        if x > hi:
            break
        ax.text(x, 0.985, _short(name), transform=ax.get_xaxis_transform(), rotation=90, ha="center", va="top",
                fontsize=6.5, color=_event_colour(name), clip_on=True,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})  # fmt: skip


def _draw_dns(ax: Axes, dns: list[tuple[float, str | None]], colour: dict[str, str], lo: float, hi: float) -> None:
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_ylabel("DNS", rotation=0, ha="right", va="center")
    changes = sorted(dns, key=lambda p: p[0])
    if not changes:
        ax.text(0.5, 0.5, "no DNS answers recorded", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="#888888")  # fmt: skip
        return
    for i, (start, region) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else hi
        start, end = max(start, lo), min(end, hi)
        if end <= start:
            continue
        ax.axvspan(start, end, 0.15, 0.85, color=colour.get(region or "", "#cccccc"), alpha=0.8, lw=0)
        if (end - start) > (hi - lo) * 0.06:
            ax.text((start + end) / 2, 0.5, region or "no answer", ha="center", va="center", fontsize=8,
                    color="white" if region else "#444444")  # fmt: skip


def _draw_lag(ax: Axes, lag: dict[str, list[tuple[float, float]]]) -> None:
    ax.set_ylabel("replication lag\n(emulated s)")
    drawn = False
    for i, (kind, points) in enumerate(lag.items()):
        if not points:
            continue
        points = sorted(points)
        ax.step([t for t, _ in points], [s for _, s in points], where="post", marker=".", ms=4, lw=1.2,
                color=LAG_COLOURS[i % len(LAG_COLOURS)], label=kind)  # fmt: skip
        drawn = True
    if drawn:
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no replication lag measured", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="#888888")  # fmt: skip
        ax.set_yticks([])


def bin_width(window: float) -> float:
    """A round bin width (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k) giving close to TARGET_BINS bins (40-80)."""
    if not (math.isfinite(window) and window > 0):
        return 1.0
    ideal = window / TARGET_BINS
    exponent = math.floor(math.log10(ideal))
    candidates = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in NICE_WIDTHS]
    return min(candidates, key=lambda w: abs(math.log(window / w / TARGET_BINS)))


def _window(raw: Any, commits: dict[str, list[float]], outage: tuple[float, float] | None,
            dns: list[tuple[float, str | None]], lag: dict[str, list[tuple[float, float]]],
            events: list[tuple[float, str]]) -> tuple[float, float]:  # fmt: skip
    """The report's window when it is one; else what the data covers; else a unit window around 0."""
    given = _span(raw)
    if given is not None and given[1] > given[0]:
        return given
    xs = [t for times in commits.values() for t in times] + [t for t, _ in dns] + [at for at, _ in events]
    xs += [t for points in lag.values() for t, _ in points] + (list(outage) if outage else [])
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return (0.0, 1.0)
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.03 or 1.0
    return (lo - pad, hi + pad)


def _regions(report: dict[str, Any], commits: dict[str, list[float]], dns: list[tuple[float, str | None]]) -> list[str]:
    """Every region named, the primary first: one colour per region in every panel."""
    names: list[str] = []
    primary = as_dict(report.get("twin")).get("region")
    accepted = as_dict(as_dict(report.get("producers")).get("accepted_by_region"))
    for name in [primary, *commits, *(r for _, r in dns), *accepted]:
        if name is not None and str(name) not in names:
            names.append(str(name))
    return names


def _subtitle(report: dict[str, Any]) -> str:
    f = report.get("failover")
    r = as_dict(report.get("result"))
    if not isinstance(f, dict):
        parts = ["no failover"]
    else:
        parts = [f"detection {secs(f.get('detection_seconds'), 's')}", f"RTO {secs(f.get('rto_seconds'), 's')}",
                 f"RPO {rpo(f)}"]  # fmt: skip
    parts.append(f"lost before/after reconcile {num(r.get('lost_before_reconcile'))}/"
                 f"{num(r.get('lost_after_reconcile'))}")  # fmt: skip
    return "  ·  ".join(parts)


def _short(event: str) -> str:
    """A step's label short enough for the picture: 'failover: promote_database completed' -> 'promote_database'."""
    text = event.split(": ", 1)[1] if ": " in event else event
    text = text.removesuffix(" completed")
    return text if len(text) <= 30 else text[:29] + "…"


def _event_colour(event: str) -> str:
    lowered = event.lower()
    kind = lowered.split(":", 1)[0] if ":" in lowered else ""
    if kind in EVENT_COLOURS:
        return EVENT_COLOURS[kind]
    if lowered.endswith(" down"):
        return EVENT_COLOURS["down"]
    if lowered.endswith((" back", " up")):
        return EVENT_COLOURS["back"]
    return EVENT_COLOURS["alarm"] if "alarm" in lowered else "#555555"


def _numbers(value: Any) -> list[float]:
    return [x for x in map(as_float, as_list(value)) if x is not None]


def _span(value: Any) -> tuple[float, float] | None:
    """[start, end] as numbers; an open end (None) is taken as far in the future (still ongoing)."""
    items = as_list(value)
    if len(items) != 2 or (start := as_float(items[0])) is None:
        return None
    end = as_float(items[1])
    return (start, end if end is not None and end >= start else math.inf)


def _pairs(value: Any, keep_none: bool = False) -> list[tuple[float, Any]]:
    pairs: list[tuple[float, Any]] = []
    for item in as_list(value):
        entry = as_list(item)
        if len(entry) >= 2 and (t := as_float(entry[0])) is not None and (keep_none or entry[1] is not None):
            pairs.append((t, entry[1]))
    return pairs


def _points(value: Any) -> list[tuple[float, float]]:
    return [(t, s) for t, v in _pairs(value) if (s := as_float(v)) is not None]
