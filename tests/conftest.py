"""Shared test helpers: the sample events and the real PostgreSQL server of the test session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def event_files() -> list[Path]:
    return sorted(EVENTS.glob("*.json"))


@dataclass
class FakeClock:
    """A twin clock a test moves by hand (extensions read ``now()``; no sleeping)."""

    t: float = 1000.0

    def now(self) -> float:
        return self.t
