"""Fencing: a region that is not the active one must not commit, and must not keep processing switched on.

Two layers (DESIGN §4, "fencing in a two-region world"):

- :class:`Fence` - the processor asks it before every commit. It reads the control record from this region's
  replica (cached for at most ``max_age`` seconds, so a batch costs no extra round trip while the record
  is fresh) and raises :class:`Fenced` when another region is active. The epoch moves the moment a
  failover takes its lock, so a zombie primary stops committing within ``max_age`` + replication (~1 s).
- :class:`ProcessingSwitch` - the processor's SQS event source mapping in one region, and the recorded
  processing state beside it: the SSM parameter the app template reads as ``ProcessingEnabled`` on every
  deploy. Writing both is what makes a redeploy keep a failover's outcome: CloudFormation resolves the
  parameter at deploy time and re-sends the live value, never the one of the day the stack was created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tandem_core.control import ControlRecord, ControlStore

ENABLED = ("Enabled", "Enabling")
DISABLED = ("Disabled", "Disabling")


class Fenced(RuntimeError):
    """This region is not the active one: nothing may be committed here (the message says who is)."""

    def __init__(self, region: str, record: ControlRecord) -> None:
        super().__init__(
            f"fenced: {record.active_region} is the active region (epoch {record.epoch}), not {region};"
            " the batch goes back to the queue and this region's monitor forwards it"
        )
        self.record = record


class Fence:
    """Whether this region may commit, from the control record in its own replica (read at most every
    ``max_age`` seconds).

    The cache ages by wall time: Lambda freezes an idle execution environment, and a monotonic clock may not
    advance while it is frozen - a thawed environment would commit on a record read before the failover.
    A wall clock that went backwards (an NTP step) expires the cache too."""

    def __init__(
        self, store: ControlStore, region: str, max_age: float, clock: Callable[[], float] | None = None
    ) -> None:
        self._store = store
        self._region = region
        self._max_age = max_age
        self._clock = clock or (lambda: time.time())  # looked up per call: tests move the wall clock
        self._cached: tuple[float, ControlRecord] | None = None

    def record(self) -> ControlRecord:
        now = self._clock()
        if self._cached is None or not 0.0 <= now - self._cached[0] < self._max_age:
            self._cached = (now, self._store.read())
        return self._cached[1]

    def check(self) -> ControlRecord:
        """The control record when this region is active; :class:`Fenced` otherwise."""
        record = self.record()
        if record.active_region != self._region:
            raise Fenced(self._region, record)
        return record


@dataclass(frozen=True)
class ProcessingSwitch:
    """The processor's SQS mapping in one region plus its recorded state (the SSM parameter)."""

    region: str
    lambda_: Any
    ssm: Any
    function: str
    state_parameter: str

    def mappings(self) -> list[dict[str, Any]]:
        found = self.lambda_.list_event_source_mappings(FunctionName=self.function).get("EventSourceMappings", [])
        return [m for m in found if ":sqs:" in str(m.get("EventSourceArn", ""))]

    def is_on(self) -> bool:
        """Whether any SQS mapping of the processor is (becoming) enabled."""
        return any(m.get("State") in ENABLED for m in self.mappings())

    def set(self, *, enabled: bool) -> str:
        """Every SQS mapping enabled (or disabled), then the recorded state; already so: nothing changes.

        The mapping first: it is what stops or starts processing; the record only has to be right by the
        next deploy, and a retry of this (idempotent) call writes it.
        """
        mappings = self.mappings()
        if not mappings:
            raise LookupError(f"{self.function} has no SQS event source mapping in {self.region}")
        wanted = ENABLED if enabled else DISABLED
        changed = [m["UUID"] for m in mappings if m.get("State") not in wanted]
        for uuid in changed:
            self.lambda_.update_event_source_mapping(UUID=uuid, Enabled=enabled)
        self.ssm.put_parameter(Name=self.state_parameter, Value=str(enabled).lower(), Type="String", Overwrite=True)
        verb = "enabled" if enabled else "disabled"
        return f"{self.region} processing {verb}" + ("" if changed else " (already)")
