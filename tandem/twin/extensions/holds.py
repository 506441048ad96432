"""Replication held at a region's border: what an outage or a partition does to S3 and DynamoDB replication.

AWS replicates asynchronously. When a region dies - or is cut off from the other - what it wrote and had not
copied yet stays behind, and so does what the other region writes for it; once it is back, the backlog
arrives, at the pace the service works through it, not at once. Both replicators of the twin ask one
:class:`RegionHolds` whether a change may cross now: never while its source or target region is held; once
released, the region's backlog passes at ``pace`` changes per emulated second until nothing of it is left,
then it is back to the replicator's usual delay.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

#: changes per emulated second a released backlog drains at (per region), unless the release says otherwise
DEFAULT_PACE = 20.0


@dataclass
class _Drain:
    since: float
    pace: float
    passed: int = 0


class RegionHolds:
    """Which regions' replication is held, and how a released region's backlog drains (thread-safe)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._draining: dict[str, _Drain] = {}
        self._lock = threading.Lock()

    def hold(self, region: str) -> None:
        with self._lock:
            self._held.add(region)
            self._draining.pop(region, None)

    def release(self, region: str, now: float, pace: float | None = DEFAULT_PACE) -> None:
        """Let ``region``'s backlog cross, ``pace`` changes per emulated second (None: all at once)."""
        if pace is not None and not pace > 0:
            raise ValueError(f"a backlog's pace must be > 0 changes per second, not {pace}")
        with self._lock:
            self._held.discard(region)
            if pace is not None:
                self._draining[region] = _Drain(now, pace)

    @property
    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    @property
    def quiet(self) -> bool:
        """Nothing held and nothing draining: the replicators' usual path, no per-change question."""
        return not self._held and not self._draining

    def passes(self, regions: Collection[str], now: float) -> bool:
        """Whether a change between ``regions`` (its source and targets) may be applied now; a yes takes one
        from the pace of every draining region it touches."""
        with self._lock:
            if any(r in self._held for r in regions):
                return False
            drains = [self._draining[r] for r in regions if r in self._draining]
            if any(d.passed >= (now - d.since) * d.pace for d in drains):
                return False
            for d in drains:
                d.passed += 1
            return True

    def settle(self, pending: Collection[str]) -> None:
        """End the draining of every region no pending change touches any more (``pending``: the regions
        the replicator's queue still names)."""
        with self._lock:
            for region in [r for r in self._draining if r not in pending]:
                del self._draining[region]

    def describe(self) -> dict[str, object]:
        with self._lock:
            draining = {r: {"pace": d.pace, "passed": d.passed} for r, d in self._draining.items()}
            return {"held": sorted(self._held), "draining": draining}
