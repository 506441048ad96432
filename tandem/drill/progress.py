"""The drill's live progress: one line on a terminal (phase, accepted, committed, elapsed), nothing otherwise.

The line is rich's :class:`~rich.live.Live` on stderr, redrawn four times a second; a log, a pipe or CI gets
no progress at all (the report and the verdict say everything). ``committed`` counts the ledger's rows in
DR's database - the one PostgreSQL that never dies in a scenario (a hot standby until it is promoted), read
at most once a second by a background thread so a slow query never stalls the display.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tandem.localpg import connect_uri


class LiveLine:
    """Call it with a phase; tell it :meth:`accepted` counts; use it as a context manager around the run."""

    def __init__(self, stream: IO[str] | None = None, *, force_terminal: bool | None = None) -> None:
        self._console = Console(file=stream or sys.stderr, force_terminal=force_terminal)
        self._live: Live | None = None
        self._phase = "starting"
        self._accepted = 0
        self._committed: int | None = None
        self._count: Callable[[], int] | None = None
        self._baseline: int | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()

    @property
    def enabled(self) -> bool:
        return self._console.is_terminal

    def __call__(self, phase: str) -> None:
        self._phase = phase

    def accepted(self, count: int) -> None:
        self._accepted = count

    def count_committed(self, database_uri: str) -> None:
        """Count ledger rows in this database from now on (the first count is the baseline)."""
        if not self.enabled:
            return

        def count() -> int:
            conn = connect_uri(database_uri)
            try:
                return int((conn.run("SELECT count(*) FROM ledger_transaction") or [[0]])[0][0])
            finally:
                conn.close()

        self._count, self._baseline = count, None
        threading.Thread(target=self._poll, name="drill-progress", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            try:
                rows = self._count() if self._count else None
            except Exception:  # noqa: S112 - a database mid-failover: keep the last count on screen
                continue
            if rows is not None:
                self._baseline = rows if self._baseline is None else self._baseline
                self._committed = rows - self._baseline

    def _render(self) -> Text:
        committed = "-" if self._committed is None else str(self._committed)
        return Text(f"drill: {self._phase[:70]:<70}  accepted {self._accepted:>5}  committed {committed:>5}  "
                    f"{time.monotonic() - self._started:6.1f} s")  # fmt: skip

    def __enter__(self) -> LiveLine:
        if self.enabled:
            self._live = Live(get_renderable=self._render, console=self._console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
