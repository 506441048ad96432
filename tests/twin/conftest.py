"""The twins of the twin tests, started and stopped through the same launcher the CLI uses: one shared by the
modules in SHARING, one of its own for every other module."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pg8000.native
import pytest

from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem.twin import launcher

#: Modules that run one after another on one twin (the default one: x600, automatic failover off, no
#: overrides), in this order, before the package's other modules: each leaves the twin as it found it (outages
#: restored, stores resumed, faults cleared) - but for the writer's region, which only the last one moves.
#: A twin start is ~20 s of the two cores; the modules not named here start their own (test_twin_monitor too:
#: it times the monitor's verdicts in runs from a fresh twin's, and on one that served other modules first the
#: paused stores' lag did not show within its three runs).
SHARING = (
    "test_hostile_input",
    "test_status_cli",
    "test_twin_lifecycle",
    "test_twin_producers",
    "test_twin_grey_faults",
)


class _SharedTwin:
    """The sharing modules' twin: started by the first, stopped before any other twin starts."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self.pair: tuple[Path, dict[str, Any]] | None = None

    def get(self) -> tuple[Path, dict[str, Any]]:
        if self.pair is None:
            self._stack = contextlib.ExitStack()
            self.pair = self._stack.enter_context(twin_at(600.0, "shared", automatic=False))
        return self.pair

    def close(self) -> None:
        stack, self._stack, self.pair = self._stack, None, None
        if stack is not None:
            stack.close()


_SHARED = _SharedTwin()


def _module_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The sharing modules first, in SHARING's order; the package's other modules after them, as they were."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    rank = {name: n for n, name in enumerate(SHARING)}
    ordered = sorted((items[i] for i in slots), key=lambda item: rank.get(item.path.stem, len(SHARING)))
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


@pytest.fixture(scope="module", autouse=True)
def _one_twin_at_a_time(request: pytest.FixtureRequest) -> None:
    """Two twins at once starve each other's compressed clocks on two cores: a module that does not share
    stops the shared twin before its own (or its tests') start."""
    if _module_name(request.module) not in SHARING:
        _SHARED.close()


@pytest.fixture(scope="package", autouse=True)
def _shared_twin_stops_with_the_package() -> Iterator[None]:
    yield
    _SHARED.close()


@pytest.fixture(scope="module")
def started(request: pytest.FixtureRequest) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The module's twin: the shared one for a module in SHARING; else one of its own at the module's
    ``TWIN_SCALE`` (default 600), with automatic failover only where the module sets ``AUTOMATIC_FAILOVER =
    True``, its app deployed with ``TWIN_PARAMETER_OVERRIDES``."""
    name = _module_name(request.module)
    if name in SHARING:
        yield _SHARED.get()
        return
    scale = float(getattr(request.module, "TWIN_SCALE", 600.0))
    automatic = bool(getattr(request.module, "AUTOMATIC_FAILOVER", False))
    overrides = dict(getattr(request.module, "TWIN_PARAMETER_OVERRIDES", {}))
    with twin_at(scale, name, automatic=automatic, overrides=overrides) as pair:
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
