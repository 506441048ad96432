"""The twin's clock: real time by default, compressed by a factor in drills.

Every time-based behaviour of the twin (alarm periods, schedules such as ``rate(1 minute)``, replication
lag, health-check intervals) is expressed in *emulated* seconds and converted here, so one factor speeds
everything up consistently. ``scale=60`` makes one emulated minute pass in one real second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TwinClock:
    scale: float = 1.0
    _origin_real: float = field(default_factory=time.time, init=False)
    _origin_mono: float = field(default_factory=time.monotonic, init=False)

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("clock scale must be > 0")

    def now(self) -> float:
        """Emulated epoch seconds: starts at the real time and runs ``scale`` times faster."""
        return self._origin_real + (time.monotonic() - self._origin_mono) * self.scale

    def to_emulated(self, real_epoch: float) -> float:
        """The emulated time of a real wall-clock instant (e.g. a timestamp moto stamped itself)."""
        return self._origin_real + (real_epoch - self._origin_real) * self.scale

    def real_seconds(self, emulated: float) -> float:
        """How long ``emulated`` seconds take in real time."""
        return emulated / self.scale
