"""Fault injection in a region's API, as a chaos tool (AWS FIS) would: kill a function at a chosen moment.

A fault waits for one request to the region's AWS endpoint - its ``X-Amz-Target`` and a text its body
contains - lets the emulator apply it, then runs its action (kill a function's execution environment)
before the reply leaves. The function's write happened; the function never learns that it did. That is the
moment a crash mid-run is hardest to survive, and it is reached on every run, not by luck of timing.
Each fault fires once.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    target: str  # e.g. DynamoDB_20120810.UpdateItem
    matching: str  # a text the request body contains
    action: Callable[[], None]
    fired: threading.Event = field(default_factory=threading.Event)


class Faults:
    """The pending faults of one region (kept across an outage of its endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._pending.append(fault)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def targets(self) -> set[str]:
        with self._lock:
            return {f.target for f in self._pending}

    def take(self, target: str, body: bytes) -> Fault | None:
        """The first pending fault this request triggers, no longer pending."""
        text = body.decode("utf-8", errors="replace")
        with self._lock:
            for fault in self._pending:
                if fault.target == target and fault.matching in text:
                    self._pending.remove(fault)
                    return fault
        return None


class FaultingApp:
    """WSGI middleware in front of the emulator: requests no fault waits for pass untouched (no body read)."""

    def __init__(self, app: Any, faults: Faults) -> None:
        self._app = app
        self._faults = faults

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target or target not in self._faults.targets():
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        fault = self._faults.take(target, body)
        result = self._app(environ, start_response)
        if fault is None:
            return result  # type: ignore[no-any-return]
        reply = list(result)  # the emulator has applied the request; its reply has not left yet
        if hasattr(result, "close"):
            result.close()
        fault.action()
        fault.fired.set()
        return reply
