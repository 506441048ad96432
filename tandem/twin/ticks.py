"""The twin's heartbeat: every extension's ``tick(now)`` on the twin clock, a few times per real second."""

from __future__ import annotations

import logging
import threading

from tandem.twin.clock import TwinClock
from tandem.twin.extensions import Ticking

log = logging.getLogger("tandem.twin")


class TickLoop:
    """Runs the tickers in order on one thread; a failing tick is logged and the loop goes on."""

    def __init__(
        self, clock: TwinClock, tickers: list[Ticking], interval: float = 0.05, name: str = "twin-ticks"
    ) -> None:
        self._clock = clock
        self._tickers = tickers
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = self._clock.now()
            for ticker in self._tickers:
                try:
                    ticker.tick(now)
                except Exception:
                    log.exception("twin extension tick failed: %s", type(ticker).__name__)
