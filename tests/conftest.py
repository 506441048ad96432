"""Shared test helpers: the sample events and the real PostgreSQL server of the test session."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
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


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """``check()``'s first truthy result, or its last result once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def transfer(account: str, counterparty: str, amount: str = "1.00", **changes: str) -> dict[str, str]:
    """A valid transfer body (a fresh id), with ``changes`` applied on top."""
    return {
        "transaction_id": str(uuid.uuid4()),
        "account_id": account,
        "counterparty_id": counterparty,
        "amount": amount,
        "currency": "USD",
        "created_at": "2026-11-28T10:15:00Z",
    } | changes
