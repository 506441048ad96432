"""Drill tests share one twin on the drill's compressed clock (the CLI test starts its own)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.drill import DRILL_SCALE
from tandem.twin import launcher


@pytest.fixture(scope="module")
def twin_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tandem-drill-test-") as d:
        launcher.start(Path(d), scale=DRILL_SCALE)
        try:
            yield Path(d)
        finally:
            launcher.stop(Path(d))
