"""moto extensions for the twin, pinned to moto 5.2.5 (``tandem.moto_ext.MOTO_VERSION``).

Each module adds what moto lacks as methods on moto's own backend/response classes (moto dispatches an API
action to the snake_case method of the same name on the service's Response class), or as a periodic
``tick(now)`` driven by the twin daemon with the compressed clock. An extension never changes what moto
already does correctly.
"""

from __future__ import annotations

from typing import Protocol


class Ticking(Protocol):
    """Periodic work of an extension; ``now`` is the twin clock's emulated epoch seconds."""

    def tick(self, now: float) -> None: ...
