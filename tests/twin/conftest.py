"""A twin per test module, started and stopped through the same launcher the CLI uses."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem.twin import launcher


@pytest.fixture(scope="module")
def twin_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tandem-twin-test-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def twin(twin_dir: Path) -> Iterator[dict[str, Any]]:
    status = launcher.start(twin_dir, scale=600.0)
    try:
        yield status
    finally:
        launcher.stop(twin_dir)


def aws(status: dict[str, Any], region: str, service: str) -> Any:
    return emulator_client(service, region, status["regions"][region]["endpoint"])


def pg(status: dict[str, Any], region: str, timeout: float = 5) -> pg8000.native.Connection:
    """Connect with the libpq URI that `tandem twin status --json` prints."""
    return connect_uri(status["regions"][region]["postgres"], timeout=timeout)
