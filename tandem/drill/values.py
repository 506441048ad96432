"""The values a drill report holds, read without failing: coercion to numbers, dicts and lists, and their text.

Every key of the report may be missing or ``None`` (a blip has no execution, steady has no failover, a drill
that could not run has almost nothing): these helpers turn what is there into what the page and the picture
need, and say ``—`` for what is not.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "—"


def scenarios_of(report: dict[str, Any]) -> dict[str, Any] | None:
    scenarios = report.get("scenarios")
    if report.get("scenario") == "all" or isinstance(scenarios, dict):
        return scenarios if isinstance(scenarios, dict) else {}
    return None


def clock_scale(report: dict[str, Any]) -> float | None:
    for holder in (report.get("series"), report.get("failover"), report.get("twin")):
        scale = as_float(as_dict(holder).get("clock_scale"))
        if scale is not None and scale > 0:
            return scale
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_float(value: Any) -> float | None:
    """A finite number, or None (bools, None, NaN and text are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def num(value: Any) -> str:
    number = as_float(value)
    if number is None:
        return DASH if value is None or isinstance(value, int | float) else cell(value)
    return str(int(number)) if number.is_integer() else f"{number:.1f}"


def secs(value: Any, unit: str = "") -> str:
    number = as_float(value)
    if number is None:
        return DASH
    text = f"{number:.1f}" if abs(number) >= 0.05 or number == 0 else f"{number:.3g}"
    return f"{text} {unit}".rstrip()


def cell(value: Any) -> str:
    """Markdown-safe on one table row: a pipe would split the cell, a newline end the row."""
    text = DASH if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def rpo(f: dict[str, Any]) -> str:
    if f.get("rpo_seconds") is None and f.get("rpo_transactions") is None:
        return DASH
    return f"{secs(f.get('rpo_seconds'), 's')} / {num(f.get('rpo_transactions'))} transaction(s)"
