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
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tandem.aws_regions import check_region_pair
from tandem.local import FUNCTIONS, LocalRegion, provision_region
from tandem.localpg import free_port
from tandem.template import ROOT
from tandem.twin.aurora import AuroraGlobal
from tandem.twin.clock import TwinClock
from tandem.twin.control import STATE_FILE
from tandem.twin.extensions import Ticking
from tandem.twin.ownership import new_postgres_root, stop_postgres_under
from tandem.twin.regions import RegionEndpoint
from tandem.twin.rules import rules_from_template
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
    ephemeral: bool = False  # started for a drill or an invoke: the last such user stops it

    def __post_init__(self) -> None:
        check_region_pair(self.primary, self.dr)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"clock scale must be a finite number > 0, not {self.scale}")

    @property
    def regions(self) -> tuple[str, str]:
        return (self.primary, self.dr)

    def role(self, region: str) -> str:
        return "primary" if region == self.primary else "dr"


class Worker:
    """One function worker process (see tandem.twin.worker); one invocation at a time, like one Lambda env.

    A worker that died (killed, or the runtime crashed) is replaced on the next invocation, as Lambda
    replaces a failed execution environment: a new process, with its cold start. The death is logged.
    """

    def __init__(self, function: str, local: LocalRegion, log_path: Path) -> None:
        self.function, self.region = function, local.region
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        self._env = {**os.environ, **local.function_env(function), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.restarts = 0
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem.twin.worker", self.function, self.region],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=self._env, text=True, bufsize=1,
        )  # fmt: skip

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The handler's reply: {"ok": True, "response": ...} or a function error."""
        with self._lock:
            if self._proc.poll() is not None:
                self._replace(f"exited with {self._proc.returncode} between invocations")
            assert self._proc.stdin is not None
            assert self._proc.stdout is not None
            try:
                self._proc.stdin.write(json.dumps(event) + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except (BrokenPipeError, ValueError):
                line = ""
            if not line:  # died during this invocation: Lambda reports Runtime.ExitError for it
                code = self._proc.wait()
                self._replace(f"exited with {code} during an invocation")
                return {"ok": False, "errorType": "Runtime.ExitError", "errorMessage": f"runtime exited ({code})"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _replace(self, why: str) -> None:
        log.warning("worker %s in %s %s; starting a new one", self.function, self.region, why)
        self._log.write(f"tandem twin: execution environment {why}; starting a new one\n")
        self._log.flush()
        self.restarts += 1
        self._proc = self._spawn()

    @property
    def pid(self) -> int:
        return self._proc.pid

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
    replication_paused: bool = False
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
        self.pg_root = new_postgres_root(cfg.state_dir)
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
            stop_postgres_under(self.pg_root)  # servers a start-up cut short left outside self.aurora
            shutil.rmtree(self.pg_root, ignore_errors=True)

    # ------------------------------------------------------------------ operations
    def outage(self, region: str) -> None:
        self._check_region(region)
        if not self.endpoints[region].up:
            raise ValueError(f"{region} is already down")
        self.endpoints[region].stop()
        assert self.aurora is not None
        self.aurora.outage(region)

    def restore(self, region: str) -> None:
        self._check_region(region)
        if self.endpoints[region].up:
            raise ValueError(f"{region} is not down; nothing to restore")
        assert self.aurora is not None
        self.aurora.restore(region)
        self.endpoints[region].start()

    def replication(self, action: str) -> None:
        """Pause or resume DynamoDB and S3 replication (Aurora's is PostgreSQL's own and stops in an outage)."""
        if action not in {"pause", "resume"}:
            raise ValueError(f"replication action must be pause or resume, not {action!r}")
        for replicator in (self.dynamo, self.s3):
            getattr(replicator, action)()
        self.replication_paused = action == "pause"

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
                "functions": {
                    fn: {"pid": w.pid, "restarts": w.restarts} for (r, fn), w in self.workers.items() if r == region
                },
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
            "replication": {
                "aurora_replay_lag_bytes": self.aurora.replay_lag_bytes(),
                "dynamodb_pending_changes": self.dynamo.pending(),
                "s3_pending_objects": self.s3.pending(),
                "paused": self.replication_paused,
            },
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
        """moto extensions (see tandem.twin.extensions), all driven by the twin clock."""
        from tandem.twin.extensions import (
            cloudwatch_alarms,
            dynamodb_replication,
            event_routing,
            rds_global,
            route53_health,
            s3_replication,
        )

        assert self.aurora is not None
        aurora, clock, up = self.aurora, self.clock, (lambda r: self.endpoints[r].up)

        def promote(request: rds_global.PromotionRequest) -> None:
            if request.mode == "switchover":
                aurora.switchover(request.to_region)
            else:
                aurora.failover(request.to_region)

        rds_global.install()
        rds_global.set_promotion_handler(promote)
        self.dynamo = dynamodb_replication.DynamoReplicator(lag_seconds=0.5, clock=clock)
        dynamodb_replication.install(self.dynamo)
        self.s3 = s3_replication.S3Replicator(delay_seconds=2.0, clock=clock)
        s3_replication.install(self.s3)
        self.alarms = cloudwatch_alarms.AlarmEvaluator(clock, is_region_up=up)
        self.router = event_routing.EventRouter(self._deliver, clock, is_region_up=up)
        self.alarms.add_listener(self.router.on_alarm_state_change)
        self.poller = event_routing.SqsPoller(self._invoke_arn, clock, is_region_up=up)
        self.health = route53_health.HealthChecker(clock, endpoint_probe=self._probe)
        route53_health.install()
        self._provision_replication()
        self._provision_functions()
        self.tickers += [self.dynamo, self.s3, self.alarms, self.router, self.poller, self.health]

    def _invoke_arn(self, region: str, function_arn: str, event: dict[str, Any]) -> Any:
        """The SQS poller's invoker: run the function behind ``function_arn``; raise on a function error."""
        reply = self.invoke(region, self._function_of(region, function_arn), event)
        if not reply.get("ok"):
            raise RuntimeError(f"{reply.get('errorType')}: {reply.get('errorMessage')}")
        return reply.get("response")

    def _deliver(self, region: str, target_arn: str, payload: Any) -> None:
        """EventBridge rule targets: our functions (asynchronous invocation: errors are logged) and queues."""
        if ":function:" in target_arn:
            reply = self.invoke(region, self._function_of(region, target_arn), payload)
            if not reply.get("ok"):
                log.warning("event target %s failed: %s", target_arn, reply)
        elif target_arn.startswith("arn:aws:sqs:"):
            _, _, _, queue_region, account, name = target_arn.split(":", 5)
            sqs = self.locals[queue_region].client("sqs")
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=payload if isinstance(payload, str) else json.dumps(payload))
        else:
            log.warning("event target %s is not a kind the twin delivers to", target_arn)

    def _function_of(self, region: str, function_arn: str) -> str:
        name = function_arn.split(":function:", 1)[-1].split(":", 1)[0]
        template = self.locals[region].template
        for function, logical in FUNCTIONS.items():
            if template.physical.get(logical, {}).get("Ref") == name:
                return function
        raise ValueError(f"no twin function behind {function_arn}")

    def _probe(self, config: dict[str, Any]) -> bool:
        """Route53 endpoint checks: the ingress of a region answers while that region is up."""
        target = str(config.get("FullyQualifiedDomainName") or config.get("IPAddress") or "")
        for region, endpoint in self.endpoints.items():
            if region in target:
                return endpoint.up
        return True

    def _provision_replication(self) -> None:
        """The global table's replica in the DR region and S3 replication both ways (as infra_global does)."""
        cfg = self.config
        primary = self.locals[cfg.primary]
        table = primary.resources.table
        primary.client("dynamodb").update_table(TableName=table, ReplicaUpdates=[{"Create": {"RegionName": cfg.dr}}])
        iam = primary.client("iam")
        role = iam.create_role(
            RoleName="tandem-s3-replication",
            AssumeRolePolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                 "Principal": {"Service": "s3.amazonaws.com"}}]}
            ),
        )["Role"]["Arn"]  # fmt: skip
        for source, dest in ((cfg.primary, cfg.dr), (cfg.dr, cfg.primary)):
            self.locals[source].client("s3").put_bucket_replication(
                Bucket=self.locals[source].resources.bucket,
                ReplicationConfiguration={
                    "Role": role,
                    "Rules": [
                        {
                            "ID": f"to-{dest}",
                            "Priority": 1,
                            "Status": "Enabled",
                            "Filter": {"Prefix": "archive/"},
                            "DeleteMarkerReplication": {"Status": "Disabled"},
                            "Destination": {"Bucket": f"arn:aws:s3:::{self.locals[dest].resources.bucket}"},
                        }
                    ],
                },
            )

    def _provision_functions(self) -> None:
        """Each function and its SQS event source mapping in moto's Lambda, as the template declares them.

        moto never runs the code (the poller hands batches to our workers); the mapping's state is what the
        failover handler flips through the real API.
        """
        role = (
            self.locals[self.config.primary]
            .client("iam")
            .create_role(
                RoleName="tandem-function",
                AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
            )["Role"]["Arn"]
        )
        code = _placeholder_zip()
        for _region, local in self.locals.items():
            tpl = local.template
            lam = local.client("lambda")
            arns: dict[str, str] = {}
            for logical in FUNCTIONS.values():
                arns[logical] = tpl.physical[logical]["Arn"]
                props = tpl.properties(logical)
                name = tpl.physical[logical]["Ref"]
                lam.create_function(
                    FunctionName=name, Runtime="python3.12", Role=role, Handler=str(props["Handler"]),
                    Code={"ZipFile": code}, Architectures=["arm64"],
                )  # fmt: skip
                for event in props.get("Events", {}).values():
                    if event.get("Type") != "SQS":
                        continue
                    ev = event["Properties"]
                    lam.create_event_source_mapping(
                        EventSourceArn=local.resources.queue_arn,
                        FunctionName=name,
                        BatchSize=int(tpl.resolve(ev.get("BatchSize", 10))),
                        Enabled=bool(tpl.resolve(ev.get("Enabled", True))),
                        FunctionResponseTypes=list(ev.get("FunctionResponseTypes", [])),
                    )
            events = local.client("events")
            for spec in rules_from_template(tpl, arns):
                events.put_rule(**spec.put_rule_args())
                events.put_targets(Rule=spec.name, Targets=[{"Id": "function", "Arn": spec.target_arn}])

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.config.tick_seconds):
            now = self.clock.now()
            for ticker in self.tickers:
                try:
                    ticker.tick(now)
                except Exception:
                    log.exception("twin extension tick failed: %s", type(ticker).__name__)


def _placeholder_zip() -> bytes:
    """A deployment package for moto's bookkeeping only: the twin's workers run the real code from src/."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.txt", "Tandem twin: the code runs in the twin's function workers, from src/.\n")
    return buf.getvalue()


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
            elif len(parts) == 2 and parts[0] == "replication":
                self.twin.replication(parts[1])
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


class StartupAborted(BaseException):
    """SIGTERM/SIGINT while the twin is still starting: abandon start-up and clean up (see :func:`run`)."""


def run(config: TwinConfig) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state_path = config.state_dir / STATE_FILE
    shutdown = threading.Event()
    ready = threading.Event()
    twin = Twin(config)

    def on_signal(signum: int, _frame: object) -> None:
        shutdown.set()
        if not ready.is_set():
            raise StartupAborted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server: ThreadingHTTPServer | None = None
    try:
        twin.start()
        handler = type("Handler", (_ControlHandler,), {"twin": twin, "shutdown": shutdown})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        state = {
            "pid": os.getpid(), "control_port": server.server_address[1], "postgres_dir": str(twin.pg_root),
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.set_inheritable(args.lock_fd, False)  # held for this process's life; no worker or server inherits it
    try:
        config = TwinConfig(args.state_dir, args.primary, args.dr, args.scale, ephemeral=args.ephemeral)
    except ValueError as exc:
        print(f"tandem twin: {exc}", file=sys.stderr, flush=True)
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
