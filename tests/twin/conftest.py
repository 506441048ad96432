"""A twin per test module, started and stopped through the same launcher the CLI uses."""

from __future__ import annotations

import contextlib
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
def started(request: pytest.FixtureRequest) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The module's twin: at the module's ``TWIN_SCALE`` (default 600), with automatic failover only where
    the module sets ``AUTOMATIC_FAILOVER = True``, its app deployed with ``TWIN_PARAMETER_OVERRIDES``."""
    scale = float(getattr(request.module, "TWIN_SCALE", 600.0))
    automatic = bool(getattr(request.module, "AUTOMATIC_FAILOVER", False))
    overrides = dict(getattr(request.module, "TWIN_PARAMETER_OVERRIDES", {}))
    with twin_at(scale, request.module.__name__.rsplit(".", 1)[-1], automatic=automatic, overrides=overrides) as pair:
        yield pair


@pytest.fixture(scope="module")
def twin_dir(started: tuple[Path, dict[str, Any]]) -> Path:
    return started[0]


@pytest.fixture(scope="module")
def twin(started: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return started[1]


def aws(status: dict[str, Any], region: str, service: str) -> Any:
    return emulator_client(service, region, status["regions"][region]["endpoint"])


def pg(status: dict[str, Any], region: str, timeout: float = 5) -> pg8000.native.Connection:
    """Connect with the libpq URI that `tandem twin status --json` prints."""
    return connect_uri(status["regions"][region]["postgres"], timeout=timeout)


def automatic_failover(status: dict[str, Any], enabled: bool) -> None:
    """Turn the failover handler's alarm rule on or off in both regions, as an operator would (EventBridge).

    Tests of other behaviour run with it off: at x600 the twin's monitor cannot keep its heartbeat within the
    scaled alarm threshold, and a test that takes a region down for its own purpose must not race a failover.
    """
    for region, info in status["regions"].items():
        events = aws(status, region, "events")
        name = f"{info['resources']['stack']}-peer-region-impaired"
        (events.enable_rule if enabled else events.disable_rule)(Name=name)


@contextlib.contextmanager
def twin_at(
    scale: float, purpose: str, *, automatic: bool, overrides: dict[str, str] | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A twin of its own for a test module (state dir, status), at ``scale``, with or without automatic
    failover, its app stacks deployed with ``overrides``; stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"tandem-twin-{purpose}-") as d:
        try:
            status = launcher.start(Path(d), scale=scale, parameter_overrides=overrides)
        except RuntimeError as error:  # the log goes with the temporary directory: show its tail now
            log = Path(d) / "twin.log"
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-60:] if log.exists() else []
            raise RuntimeError("\n".join([str(error), "--- twin.log (tail) ---", *tail])) from error
        try:
            automatic_failover(status, enabled=automatic)
            yield Path(d), status
        finally:
            launcher.stop(Path(d))
