"""The twin process: two emulated regions, the Aurora pair, function workers, extension ticks, control API.

Started by ``tandem twin up`` (``python -m tandem.twin.daemon``). It writes ``twin.json`` into the state
directory once everything is provisioned, serves the control API on loopback, and on ``down`` (or SIGTERM)
stops workers, emulators and PostgreSQL and removes every data directory it created.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tandem.local import FUNCTIONS, LocalRegion, provision_region
from tandem.localpg import free_port
from tandem.template import ROOT
from tandem.twin.aurora import AuroraGlobal
from tandem.twin.clock import TwinClock
from tandem.twin.control import STATE_FILE
from tandem.twin.extensions import Ticking
from tandem.twin.regions import RegionEndpoint
from tandem.twin.service_metrics import ServiceMetrics

log = logging.getLogger("tandem.twin")
GLOBAL_CLUSTER = "tandem-ledger"


@dataclass
class TwinConfig:
    state_dir: Path
    primary: str = "us-east-1"
    dr: str = "us-west-2"
    scale: float = 1.0
    tick_seconds: float = 0.05  # real seconds between extension ticks

    @property
    def regions(self) -> tuple[str, str]:
        return (self.primary, self.dr)

    def role(self, region: str) -> str:
        return "primary" if region == self.primary else "dr"


class Worker:
    """One function worker process (see tandem.twin.worker); one invocation at a time, like one Lambda env."""

    def __init__(self, function: str, local: LocalRegion, log_path: Path) -> None:
        self.function, self.region = function, local.region
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        env = {**os.environ, **local.function_env(function), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.twin.worker", function, local.region],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, bufsize=1,
        )  # fmt: skip

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The handler's reply: {"ok": True, "response": ...} or a function error."""
        with self._lock:
            assert self._proc.stdin is not None
            assert self._proc.stdout is not None
            if self._proc.poll() is not None:
                return {"ok": False, "errorType": "WorkerDied", "errorMessage": f"exit {self._proc.returncode}"}
            self._proc.stdin.write(json.dumps(event) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            return {"ok": False, "errorType": "WorkerDied", "errorMessage": "no reply"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self._proc.stdin:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


@dataclass
class Twin:
    config: TwinConfig
    clock: TwinClock = field(init=False)
    endpoints: dict[str, RegionEndpoint] = field(default_factory=dict)
    locals: dict[str, LocalRegion] = field(default_factory=dict)
    workers: dict[tuple[str, str], Worker] = field(default_factory=dict)
    tickers: list[Ticking] = field(default_factory=list)
    aurora: AuroraGlobal | None = None
    metrics: ServiceMetrics = field(init=False)
    pg_root: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _ticker_thread: threading.Thread | None = None
    started_at: float = 0.0

    def __post_init__(self) -> None:
        self.clock = TwinClock(self.config.scale)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        started = time.monotonic()
        cfg = self.config
        self.pg_root = Path(tempfile.mkdtemp(prefix="tandem-twin-pg-"))
        self.aurora = AuroraGlobal(self.pg_root, cfg.primary, cfg.dr)
        for region in cfg.regions:
            self.endpoints[region] = RegionEndpoint(region, free_port())
            self.endpoints[region].start()
        urllib.request.urlopen(  # noqa: S310 - loopback emulator: start from a clean slate
            f"{self.endpoints[cfg.primary].url}/moto-api/reset", data=b"", timeout=10
        ).close()
        self.aurora.start()
        for region in cfg.regions:
            node = self.aurora.nodes[region]
            self.locals[region] = provision_region(region, self.endpoints[region].url, node, cfg.role(region))
        self._provision_global()
        for region, local in self.locals.items():
            for function in FUNCTIONS:
                self.workers[(region, function)] = Worker(function, local, cfg.state_dir / f"{function}-{region}.log")
        self.metrics = ServiceMetrics(
            self.clock, list(cfg.regions), lambda r: self.locals[r].client("cloudwatch"), lambda r: self.endpoints[r].up
        )
        self.tickers.append(self.metrics)
        self._install_extensions()
        self._ticker_thread = threading.Thread(target=self._tick_loop, name="twin-ticks", daemon=True)
        self._ticker_thread.start()
        self.started_at = time.monotonic() - started

    def stop(self) -> None:
        self._stop.set()
        if self._ticker_thread is not None:
            self._ticker_thread.join(timeout=5)
        log.info("stopping workers")
        for worker in self.workers.values():
            worker.stop()
        log.info("stopping region endpoints")
        for endpoint in self.endpoints.values():
            endpoint.stop()
        log.info("stopping databases")
        if self.aurora is not None:
            self.aurora.stop()
        if self.pg_root is not None:
            shutil.rmtree(self.pg_root, ignore_errors=True)

    # ------------------------------------------------------------------ operations
    def outage(self, region: str) -> None:
        self._check_region(region)
        self.endpoints[region].stop()
        assert self.aurora is not None
        self.aurora.outage(region)

    def restore(self, region: str) -> None:
        self._check_region(region)
        assert self.aurora is not None
        self.aurora.restore(region)
        self.endpoints[region].start()

    def invoke(self, region: str, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """Run a function in a region as Lambda would (refused while that region is down)."""
        self._check_region(region)
        if not self.endpoints[region].up:
            return {"ok": False, "errorType": "RegionDown", "errorMessage": f"{region} is down"}
        worker = self.workers.get((region, function))
        if worker is None:
            raise ValueError(f"unknown function {function!r}")
        reply = worker.invoke(event)
        function_name = self.locals[region].template.physical[FUNCTIONS[function]]["Ref"]
        self.metrics.record_invocation(region, function_name, bool(reply.get("ok")), self.clock.now())
        return reply

    def status(self) -> dict[str, Any]:
        assert self.aurora is not None
        regions = {}
        for region in self.config.regions:
            local = self.locals[region]
            regions[region] = {
                "role": self.config.role(region),
                "endpoint": self.endpoints[region].url,
                "postgres": self.aurora.uri(region),
                "up": self.endpoints[region].up,
                "database": self.aurora.role(region),
                "resources": {
                    "ledger_table": local.resources.table,
                    "archive_bucket": local.resources.bucket,
                    "queue_url": local.resources.queue_url,
                    "dlq_url": local.resources.dlq_url,
                    "db_secret_arn": local.resources.secret_arn,
                },
            }
        return {
            "regions": regions,
            "global_cluster": GLOBAL_CLUSTER,
            "writer_region": self.aurora.writer,
            "replication": {"aurora_replay_lag_bytes": self.aurora.replay_lag_bytes()},
            "clock": {"scale": self.clock.scale, "now": self.clock.now()},
            "startup_seconds": round(self.started_at, 3),
        }

    # ------------------------------------------------------------------ internals
    def _check_region(self, region: str) -> None:
        if region not in self.endpoints:
            raise ValueError(f"unknown region {region!r}; the twin has {', '.join(self.config.regions)}")

    def _provision_global(self) -> None:
        """The Aurora global cluster as moto sees it, so describe_global_clusters works from both regions."""
        cfg = self.config
        rds = self.locals[cfg.primary].client("rds")
        rds.create_global_cluster(GlobalClusterIdentifier=GLOBAL_CLUSTER, Engine="aurora-postgresql")
        for region in cfg.regions:
            self.locals[region].client("rds").create_db_cluster(
                DBClusterIdentifier=f"{GLOBAL_CLUSTER}-{region}",
                Engine="aurora-postgresql",
                GlobalClusterIdentifier=GLOBAL_CLUSTER,
                **({"MasterUsername": "tandem", "ManageMasterUserPassword": True} if region == cfg.primary else {}),
            )

    def _install_extensions(self) -> None:
        """Install the moto extensions that exist (each is optional until it lands)."""
        assert self.aurora is not None
        aurora = self.aurora
        with contextlib.suppress(ImportError):
            from tandem.twin.extensions import rds_global  # type: ignore[attr-defined,unused-ignore]

            rds_global.install()

            def promote(request: Any) -> None:
                if request.mode == "switchover":
                    aurora.switchover(request.to_region)
                else:
                    aurora.failover(request.to_region)

            rds_global.set_promotion_handler(promote)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.config.tick_seconds):
            now = self.clock.now()
            for ticker in self.tickers:
                try:
                    ticker.tick(now)
                except Exception:
                    log.exception("twin extension tick failed: %s", type(ticker).__name__)


class _ControlHandler(BaseHTTPRequestHandler):
    twin: Twin
    shutdown: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._reply(200, self.twin.status())
        else:
            self._reply(404, {"error": f"no such resource {self.path}"})

    def do_POST(self) -> None:
        parts = [p for p in self.path.split("/") if p]
        try:
            if parts == ["down"]:
                self._reply(200, {"stopping": True})
                self.shutdown.set()
            elif len(parts) == 2 and parts[0] in {"outage", "restore"}:
                getattr(self.twin, parts[0])(parts[1])
                self._reply(200, self.twin.status())
            elif len(parts) == 3 and parts[0] == "invoke":
                length = int(self.headers.get("Content-Length") or 0)
                event = json.loads(self.rfile.read(length) or b"{}")
                self._reply(200, self.twin.invoke(parts[1], parts[2], event))
            else:
                self._reply(404, {"error": f"no such action {self.path}"})
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})
        except Exception as exc:
            log.exception("control request failed")
            self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})


def run(config: TwinConfig) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state_path = config.state_dir / STATE_FILE
    shutdown = threading.Event()
    twin = Twin(config)
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: shutdown.set())
    server: ThreadingHTTPServer | None = None
    try:
        twin.start()
        handler = type("Handler", (_ControlHandler,), {"twin": twin, "shutdown": shutdown})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        state = {"pid": os.getpid(), "control_port": server.server_address[1], "postgres_dir": str(twin.pg_root)}
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**state, **twin.status()}, indent=2), encoding="utf-8")
        tmp.replace(state_path)
        log.info("twin ready in %.2f s", twin.started_at)
        shutdown.wait()
        return 0
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        log.info("going down")
        if server is not None:
            server.shutdown()
            server.server_close()
        twin.stop()
        log.info("down")
        state_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.twin.daemon")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--primary", default="us-east-1")
    parser.add_argument("--dr", default="us-west-2")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return run(TwinConfig(args.state_dir, args.primary, args.dr, args.scale))


if __name__ == "__main__":
    sys.exit(main())
