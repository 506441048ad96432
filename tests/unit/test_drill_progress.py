"""The drill's live line: phase, accepted, committed and elapsed on a terminal; nothing at all otherwise."""

from __future__ import annotations

import io
import time

from tandem.drill.progress import LiveLine


def test_a_terminal_gets_one_line_with_the_phase_and_the_counts() -> None:
    screen = io.StringIO()
    with LiveLine(screen, force_terminal=True) as live:
        live("region-loss: us-east-1 is down")
        live.accepted(42)
        time.sleep(0.6)  # the line is redrawn four times a second
    drawn = screen.getvalue()
    assert "region-loss: us-east-1 is down" in drawn
    assert "accepted    42" in drawn
    assert "committed     -" in drawn  # no database to count in: shown as unknown, never as 0


def test_a_pipe_gets_nothing() -> None:
    pipe = io.StringIO()
    with LiveLine(pipe) as live:
        assert not live.enabled
        live("starting the twin")
        live.accepted(3)
        live.count_committed("postgresql://nobody@127.0.0.1:1/none")  # not even tried off a terminal
        time.sleep(0.3)
    assert pipe.getvalue() == ""
