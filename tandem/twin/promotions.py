"""Aurora's control plane in the twin: promotions as the database pair makes them, and the faults on them.

The promotion handler :mod:`tandem.twin.extensions.rds_global` calls before the global cluster's writer
moves runs the real switchover or failover on the PostgreSQL pair. ``tandem twin fault promotion`` makes
the control plane misbehave, as a grey or throttled one would:

- ``--fail N``: the next N promotions fail - the API call errs and the writer stays where it is;
- ``--delay SECONDS``: the next promotion takes SECONDS emulated seconds longer. The call is accepted at
  once (as AWS's is), the global cluster shows the switch in progress, and the move itself starts on a
  timer of the twin clock; the writer flips once it has completed.

With both, the next N promotions fail and the first one after them is the slow one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from tandem.twin.clock import TwinClock

if TYPE_CHECKING:  # the checks below serve the control API, which need not import moto for them
    from tandem.twin.extensions.rds_global import PromotionRequest

log = logging.getLogger("tandem.twin")


def check_fail_count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"fail must be a whole number of promotions >= 0, not {count!r}")
    return count


def check_delay(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a promotion delay must be a finite number of emulated seconds >= 0, not {seconds!r}")
    return float(seconds)


class Promotions:
    """The promotion handler, with the faults an operator set on it (see the module docstring)."""

    def __init__(self, clock: TwinClock, move: Callable[[PromotionRequest], None]) -> None:
        """``move(request)``: the database's own switchover or failover (raises when it cannot)."""
        self._clock = clock
        self._move = move
        self._lock = threading.Lock()
        self.to_fail = 0
        self.delay_seconds = 0.0  # for the next promotion only
        self._timer: threading.Timer | None = None
        self._pending: Future[None] | None = None
        self._in_progress: dict[str, Any] | None = None
        self._stopped = False

    def fail(self, count: int) -> None:
        self.to_fail = check_fail_count(count)
        log.info("fault: the next %d promotion(s) fail", count)

    def delay(self, seconds: float) -> None:
        self.delay_seconds = check_delay(seconds)
        log.info("fault: the next promotion takes %g emulated seconds longer", self.delay_seconds)

    @property
    def in_progress(self) -> dict[str, Any] | None:
        """The delayed promotion under way (mode, target region, emulated time its move starts), else None."""
        return None if self._in_progress is None else dict(self._in_progress)

    def __call__(self, request: PromotionRequest) -> Future[None] | None:
        """rds_global's promotion handler: fail, move now, or accept now and move after the delay."""
        with self._lock:
            if self.to_fail > 0:  # the call fails, nothing flips
                self.to_fail -= 1
                log.info("fault: %s to %s fails (%d more to fail)", request.mode, request.to_region, self.to_fail)
                raise RuntimeError(f"injected fault: the {request.mode} to {request.to_region} failed")
            delay, self.delay_seconds = self.delay_seconds, 0.0
            pending: Future[None] | None = None
            if delay > 0:
                if self._stopped:
                    raise RuntimeError("the twin is stopping")
                pending = Future[None]()
                moves_at = self._clock.now() + delay
                self._in_progress = {"mode": request.mode, "to_region": request.to_region, "moves_at": moves_at}
                self._pending = pending
                self._timer = threading.Timer(self._clock.real_seconds(delay), self._later, (request, pending))
                self._timer.name, self._timer.daemon = "twin-promotion", True
                self._timer.start()
        if pending is None:
            self._move(request)
            return None
        log.info("fault: %s to %s accepted; it moves in %g emulated seconds", request.mode, request.to_region, delay)
        return pending

    def _later(self, request: PromotionRequest, pending: Future[None]) -> None:
        if not pending.set_running_or_notify_cancel():  # stopped before it was due
            return
        try:
            self._move(request)
        except BaseException as exc:
            log.warning("the delayed %s to %s failed: %s", request.mode, request.to_region, exc)
            pending.set_exception(exc)
        else:
            log.info("the delayed %s to %s completed", request.mode, request.to_region)
            pending.set_result(None)
        finally:
            with self._lock:
                if self._pending is pending:
                    self._pending, self._timer, self._in_progress = None, None, None

    def stop(self) -> None:
        """The twin is going away: a delayed promotion not yet due never starts (the writer stays)."""
        with self._lock:
            self._stopped = True
            timer, pending = self._timer, self._pending
            self._pending, self._timer, self._in_progress = None, None, None
        if timer is not None:
            timer.cancel()
        # cancel() is False when the move has started: it finishes (or fails) on its own, not waited for here
        if pending is not None and pending.cancel() and timer is not None:
            timer.join(timeout=1)  # a cancelled timer ends at once
