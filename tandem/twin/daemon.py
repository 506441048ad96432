"""The twin process: ``python -m tandem.twin.daemon`` (started by ``tandem twin up`` through the launcher).

It starts the :class:`~tandem.twin.twin.Twin`, serves the control API on loopback, writes ``twin.json`` once
everything is provisioned, and on ``down``, SIGTERM or SIGINT stops everything and removes every data
directory it created. The twin lock (see :mod:`tandem.twin.ownership`) is held through the inherited
``--lock-fd`` for the whole life of the process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from tandem.aws_regions import check_region_pair
from tandem.twin.aurora import AuroraGlobal
from tandem.twin.control import STATE_FILE
from tandem.twin.ownership import new_postgres_root, stop_postgres_under

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

    from tandem.twin.twin import TwinConfig

log = logging.getLogger("tandem.twin")


class StartupAborted(BaseException):
    """SIGTERM/SIGINT while the twin is still starting: abandon start-up and clean up (see :func:`run`)."""


class _Signals:
    """SIGTERM/SIGINT from the first line on: during start-up they abandon it (StartupAborted), afterwards
    they ask for the shutdown :func:`run` waits for."""

    def __init__(self) -> None:
        self.shutdown, self.ready = threading.Event(), threading.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.shutdown.set()
        if not self.ready.is_set():
            raise StartupAborted(signal.Signals(signum).name)


def run(config: TwinConfig, aurora: AuroraGlobal, signals: _Signals) -> int:
    """Serve the twin until ``down``/SIGTERM/SIGINT; ``aurora``: its PostgreSQL pair, already starting."""
    from tandem.twin.control_api import serve
    from tandem.twin.twin import Twin

    config.state_dir.mkdir(parents=True, exist_ok=True)
    state_path = config.state_dir / STATE_FILE
    shutdown, ready = signals.shutdown, signals.ready
    twin = Twin(config, aurora=aurora, pg_root=aurora.base_dir)
    server: BaseWSGIServer | None = None
    try:
        twin.start()
        server = serve(twin, shutdown)
        state = {
            "pid": os.getpid(), "control_port": server.port, "postgres_dir": str(twin.pg_root),
            "ephemeral": config.ephemeral,
        }  # fmt: skip
        ready.set()
        if shutdown.is_set():  # a signal arrived between the end of start-up and here
            return 0
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**state, **twin.status()}, indent=2), encoding="utf-8")
        tmp.replace(state_path)
        log.info("twin ready in %.2f s", twin.started_at)
        shutdown.wait()
        return 0
    except StartupAborted as exc:
        log.info("start-up abandoned on %s", exc)
        return 1
    except Exception as exc:
        log.error("start-up failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        traceback.print_exc()
        return 1
    finally:
        ready.set()  # from here on a signal only asks for what is already happening
        log.info("going down")
        state_path.unlink(missing_ok=True)
        if server is not None:
            server.shutdown()
            server.server_close()
        twin.stop()
        log.info("down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.twin.daemon")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--primary", default="us-east-1")
    parser.add_argument("--dr", default="us-west-2")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--lock-fd", type=int, required=True, help="the twin lock, taken by the launcher")
    parser.add_argument("--ephemeral", action="store_true")
    parser.add_argument("--templates", type=Path, nargs=2, metavar=("GLOBAL", "APP"), help="edited copies (tests)")
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.set_inheritable(args.lock_fd, False)  # held for this process's life; no worker or server inherits it
    signals = _Signals()
    aurora: AuroraGlobal | None = None
    try:
        check_region_pair(args.primary, args.dr)
        args.state_dir.mkdir(parents=True, exist_ok=True)
        # The PostgreSQL pair first: its ~4 s of initdb and base backup run on the other core while this
        # process imports the emulator and the provisioning code (~4 s more) - they were one after the other.
        aurora = AuroraGlobal(new_postgres_root(args.state_dir), args.primary, args.dr)
        aurora.start_in_background()
        from tandem.twin.stacks import parameter_override
        from tandem.twin.twin import TwinConfig

        config = TwinConfig(
            args.state_dir, args.primary, args.dr, args.scale, ephemeral=args.ephemeral,
            app_parameter_overrides=dict(map(parameter_override, args.parameter_overrides)),
        )  # fmt: skip
        if args.templates:
            config.global_template, config.app_template = args.templates
    except (ValueError, StartupAborted) as exc:
        if aurora is not None:
            _discard(aurora)
        if isinstance(exc, StartupAborted):
            log.info("start-up abandoned on %s", exc)
            return 1
        print(f"tandem twin: {exc}", file=sys.stderr, flush=True)
        return 2
    return run(config, aurora, signals)


def _discard(aurora: AuroraGlobal) -> None:
    """A start-up that ends before the twin exists: stop its PostgreSQL pair and remove its tree."""
    with contextlib.suppress(Exception):
        aurora.wait_ready()
    aurora.stop()
    stop_postgres_under(aurora.base_dir)
    shutil.rmtree(aurora.base_dir, ignore_errors=True)


if __name__ == "__main__":
    exit_code = main()
    # Everything the twin started is stopped and removed by now (run's finally). Skip the interpreter's
    # teardown of the emulator's heap and idle pool threads: it held the twin lock ~1.3 s longer, per twin.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
