"""The twin: two emulated regions, the Aurora pair, the app's functions, and the operations on them.

What each part does lives in its own module - endpoints (:mod:`.regions`), the database pair
(:mod:`.aurora`), provisioning from the templates (:mod:`.provision`, :mod:`.stacks`), functions and
workers (:mod:`.lambdas`, :mod:`.worker`), what moto lacks (:mod:`.extensions`), the clock and its tick
loop. This class puts them together in the deploy order and carries the operator's operations: outage (of a
region or one part of it, :mod:`.outages`), restore, partition, heal, replication pause/resume, faults
(:mod:`.faults`, :mod:`.promotions`), invoke, status.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import shutil
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.aws_regions import check_region_pair
from tandem.local import emulator_client
from tandem.localpg import free_port
from tandem.template import APP_TEMPLATE, GLOBAL_TEMPLATE
from tandem.twin.aurora import AuroraGlobal
from tandem.twin.border import Border
from tandem.twin.clock import TwinClock
from tandem.twin.custom_resources import CustomResources
from tandem.twin.extensions import Ticking
from tandem.twin.extensions.holds import DEFAULT_PACE, RegionHolds
from tandem.twin.faults import Fault
from tandem.twin.ingress import Ingress
from tandem.twin.lambdas import AsyncInvocations, LambdaService
from tandem.twin.log_metrics import EmfExtractor
from tandem.twin.outages import REGION, Outages, ingress_answers, outage_kind
from tandem.twin.ownership import new_postgres_root, stop_postgres_under
from tandem.twin.promotions import Promotions
from tandem.twin.provision import Creator, Region
from tandem.twin.regions import RegionEndpoint
from tandem.twin.service_metrics import ServiceMetrics
from tandem.twin.stacks import Deployed, app_resources, cluster_of, deploy_regions, redeploy_app
from tandem.twin.ticks import TickLoop

log = logging.getLogger("tandem.twin")

#: The replicated stores, as ``tandem twin replication --store`` names them.
STORES = ("aurora", "dynamodb", "s3")


@dataclass
class TwinConfig:
    state_dir: Path
    primary: str = "us-east-1"
    dr: str = "us-west-2"
    scale: float = 1.0
    tick_seconds: float = 0.05  # real seconds between extension ticks
    ephemeral: bool = False  # started for a drill or an invoke: the last such user stops it
    app_template: Path = APP_TEMPLATE
    global_template: Path = GLOBAL_TEMPLATE
    #: ``sam deploy --parameter-overrides`` for both regions' app stacks (after samconfig's values)
    app_parameter_overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_region_pair(self.primary, self.dr)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"clock scale must be a finite number > 0, not {self.scale}")

    @property
    def regions(self) -> tuple[str, str]:
        return (self.primary, self.dr)

    def role(self, region: str) -> str:
        return "primary" if region == self.primary else "dr"


@dataclass
class Twin:
    config: TwinConfig
    clock: TwinClock = field(init=False)
    endpoints: dict[str, RegionEndpoint] = field(default_factory=dict)
    ingress: dict[str, Ingress] = field(default_factory=dict)
    aurora: AuroraGlobal | None = None
    lambdas: LambdaService = field(init=False)
    deployed: Deployed = field(init=False)  # set by start()
    replication_paused: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(STORES, False))
    holds: RegionHolds = field(default_factory=RegionHolds)  # replication held at a region's border
    border: Border | None = None  # what each region reaches of the other (set by start)
    partitioned: set[str] = field(default_factory=set)
    pg_root: Path | None = None
    started_at: float = 0.0
    _tickers: list[Ticking] = field(default_factory=list)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _ticks: TickLoop | None = None
    _polling: TickLoop | None = None  # the SQS poller on its own thread (see _install_extensions)
    outages: Outages = field(default_factory=Outages)  # per region: the whole region or one part down
    promotions: Promotions = field(init=False)  # Aurora's promotions and their faults (set by _install_extensions)
    _operating: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one outage/partition at a time

    def __post_init__(self) -> None:
        self.clock = TwinClock(self.config.scale)
        retry_delays = (self.clock.real_seconds(60.0), self.clock.real_seconds(120.0))  # Lambda's, on our clock
        self.async_invocations = AsyncInvocations(
            self.invoke, lambda region, fn: self.lambdas.async_retries.get((region, fn), 2), retry_delays
        )
        self.lambdas = LambdaService(
            self.config.state_dir,
            lambda r: self.endpoints[r].url,
            lambda region, line: self.logs.accept(region, line),
        )
        self.custom_resources = CustomResources(self.invoke, self.lambdas.function_of)

    # ------------------------------------------------------------------ lifecycle
    def start_databases(self) -> None:
        """Bring the PostgreSQL pair up in the background (initdb and the base backup take ~4 s; provisioning
        the regions runs meanwhile and :meth:`start` joins before a cluster is needed). Nothing to do when the
        pair was given: the daemon starts it before it imports the emulator (another ~4 s, on the other core)."""
        if self.aurora is None:
            self.pg_root = new_postgres_root(self.config.state_dir)
            self.aurora = AuroraGlobal(self.pg_root, self.config.primary, self.config.dr)
            self.aurora.start_in_background()

    def start(self) -> None:
        started = time.monotonic()
        cfg = self.config
        self.start_databases()
        assert self.aurora is not None
        assert self.pg_root is not None
        ingress_ports = {r: free_port() for r in cfg.regions}
        for region in cfg.regions:
            self.endpoints[region] = RegionEndpoint(region, free_port())
            self.endpoints[region].start()
        # under the twin's temp tree, as the writer gates: a daemon killed with -9 leaves relays that name it,
        # and the next up/down kills every process naming that tree (tandem.twin.ownership)
        self.border = Border(self.pg_root, {r: e.port for r, e in self.endpoints.items()}, ingress_ports)
        self.border.start()
        for region in cfg.regions:
            self.ingress[region] = Ingress(
                region, ingress_ports[region], self.invoke, functools.partial(self.client, region),
                functools.partial(self.lambdas.function_of, region), advertised_url=self.border.ingress_url(region),
            )  # fmt: skip
        urllib.request.urlopen(  # noqa: S310 - loopback emulator: start from a clean slate
            f"{self.endpoints[cfg.primary].url}/moto-api/reset", data=b"", timeout=10
        ).close()
        self._install_extensions()
        regions = {r: self._region(r) for r in cfg.regions}
        self.deployed = deploy_regions(
            regions[cfg.primary], regions[cfg.dr],
            database_port={r: self.aurora.nodes[r].port for r in cfg.regions},
            database_ca={r: str(self.aurora.nodes[r].ca_file) for r in cfg.regions},
            templates=(cfg.global_template, cfg.app_template),
            api_urls={r: self.border.api_url(r) for r in cfg.regions},  # the peer's, as the other region calls it
            clock_scale=cfg.scale,
            app_overrides=cfg.app_parameter_overrides,
        )  # fmt: skip
        self.aurora.wait_ready()
        self._ticks = TickLoop(self.clock, self._tickers, cfg.tick_seconds)
        self._ticks.start()
        self._polling = TickLoop(self.clock, [self.poller], cfg.tick_seconds, name="twin-sqs-poller")
        self._polling.start()
        self.started_at = time.monotonic() - started

    def stop(self) -> None:
        for loop in (self._polling, self._ticks):
            if loop is not None:
                loop.stop()
        if hasattr(self, "promotions"):
            self.promotions.stop()  # a delayed promotion not yet due never starts
        self.async_invocations.stop()
        log.info("stopping workers")
        self.lambdas.stop(grace=0.5)  # the twin is going away: a run still going (a monitor's probes) is cut
        log.info("stopping region endpoints")
        for ingress in self.ingress.values():
            ingress.stop()
        for endpoint in self.endpoints.values():
            endpoint.stop()
        if self.border is not None:
            self.border.stop()
        log.info("stopping databases")
        if self.aurora is not None:
            with contextlib.suppress(Exception):  # a start-up cut short: let the servers come up, then stop them
                self.aurora.wait_ready()
            self.aurora.stop()
        if self.pg_root is not None:
            stop_postgres_under(self.pg_root)  # servers a start-up cut short left outside self.aurora
            shutil.rmtree(self.pg_root, ignore_errors=True)

    # ------------------------------------------------------------------ operations
    def outage(self, region: str, only: str | None = None) -> None:
        """The region dies: its APIs, ingress and database, and its replication - what it wrote and had not
        copied yet (S3 objects, DynamoDB items) stays behind, as does what the other region writes for it.

        ``only`` (database, ingress or functions): that part of the region dies and the rest keeps working,
        a grey failure (see :mod:`tandem.twin.outages`). One outage per region at a time."""
        self._check_region(region)
        kind = outage_kind(only)
        assert self.aurora is not None
        with self._operating:
            if self.partitioned:
                raise ValueError(f"{', '.join(sorted(self.partitioned))} is cut off; heal it before an outage")
            self.outages.begin(region, kind)
            log.info("outage: %s (%s)", region, kind if kind == REGION else f"{kind} only")
            if kind == REGION:
                self.holds.hold(region)
                self.endpoints[region].stop()
            if kind in (REGION, "ingress"):
                self.ingress[region].stop()
            if kind in (REGION, "database"):
                self.aurora.outage(region)
            # functions: nothing stops; invoke refuses while it lasts (and Lambda's SQS pollers stand still)

    def restore(self, region: str, backlog_pace: float | None = DEFAULT_PACE) -> None:
        """The region (or the part an outage took) comes back; after a whole-region outage its replication
        backlog (both ways) arrives at ``backlog_pace`` changes per emulated second per store (None: at once)."""
        self._check_region(region)
        assert self.aurora is not None
        with self._operating:
            kind = self.outages.require(region)
            if kind in (REGION, "database"):
                self.aurora.restore(region)
            if kind == REGION:
                self.endpoints[region].start()
            if kind in (REGION, "ingress"):
                self.ingress[region].start()
            if kind == REGION:
                self.holds.release(region, self.clock.now(), backlog_pace)
            self.outages.end(region)

    def partition(self, region: str) -> None:
        """The region is cut off but alive: it keeps serving itself and its clients (ingress, queue,
        processors, monitor, database), while nothing crosses between the regions - the other region's calls
        into it and its calls out fail, replication is held both ways and its database stops streaming to
        the standby (a failover now promotes without what it commits from here on: split brain).

        Cut off from the internet, the region is cut off from Route53's health checkers too (they run
        outside both regions): its endpoint checks fail (:meth:`_probe`), so DNS failover sees it unhealthy.
        Its producers and operators still reach it directly (they are in it, as far as the twin is concerned)."""
        self._check_region(region)
        assert self.border is not None
        assert self.aurora is not None
        with self._operating:
            kind = self.outages.of(region)
            if kind == REGION:
                raise ValueError(f"{region} is down; an outage already cuts it off")
            if kind is not None:
                raise ValueError(f"{region} has an outage ({kind} only); restore it before a partition")
            if self.partitioned:
                raise ValueError(f"{', '.join(sorted(self.partitioned))} is already cut off; heal it first")
            self.partitioned.add(region)
            self.holds.hold(region)
            self.border.cut()
            self.aurora.partition(region)

    def heal(self, region: str, backlog_pace: float | None = DEFAULT_PACE) -> None:
        """The network is back: calls cross again, the database rejoins (demoted when the other region took the
        writer meanwhile: what it committed alone is gone from it), and the held replication arrives as a
        backlog at ``backlog_pace`` changes per emulated second per store (None: at once)."""
        self._check_region(region)
        assert self.border is not None
        assert self.aurora is not None
        with self._operating:
            if region not in self.partitioned:
                raise ValueError(f"{region} is not cut off; nothing to heal")
            self.aurora.heal(region)
            self.border.mend()
            self.holds.release(region, self.clock.now(), backlog_pace)
            self.partitioned.discard(region)

    def replication(self, action: str, store: str | None = None) -> None:
        """Pause or resume one store's replication for real, or all three (``store`` None).

        Aurora: WAL replay on the standby (it keeps receiving, so its lag grows as a stalled secondary's);
        DynamoDB and S3: the replicators hold their changes and apply them on resume.
        """
        if action not in {"pause", "resume"}:
            raise ValueError(f"replication action must be pause or resume, not {action!r}")
        if store is not None and store not in STORES:
            raise ValueError(f"store must be one of {', '.join(STORES)}, not {store!r}")
        assert self.aurora is not None
        for name in STORES if store is None else (store,):
            if name == "aurora":
                (self.aurora.pause_replay if action == "pause" else self.aurora.resume_replay)()
            else:
                getattr(self.dynamo if name == "dynamodb" else self.s3, action)()
            self.replication_paused[name] = action == "pause"

    def redeploy(self, region: str) -> None:
        """The app stack of ``region`` deployed again with its samconfig env, as an operator's ``sam deploy``."""
        self._check_region(region)
        if (kind := self.outages.of(region)) in (REGION, "ingress"):  # a deploy would bring its ingress back
            raise ValueError(f"{region} has an outage ({kind}); restore it before a deploy")
        redeploy_app(self.deployed, self._region(region))

    def inject_fault(self, region: str, function: str, after_call: str, matching: str) -> None:
        """Kill ``function``'s execution environment in ``region`` right after the region's API applied the
        first request ``after_call`` (an X-Amz-Target) whose body contains ``matching`` (see faults.py)."""
        self._check_region(region)
        worker = self.lambdas.worker(region, function)
        if not after_call or not matching:
            raise ValueError("a fault needs after_call (an X-Amz-Target) and matching (a text of the body)")
        log.info("fault: kill %s in %s after %s matching %r", function, region, after_call, matching)
        self.endpoints[region].faults.add(Fault(after_call, matching, worker.kill))

    def fail_promotions(self, count: int) -> None:
        """The next ``count`` Aurora promotions fail: the API call errs, the writer stays (see promotions.py)."""
        self.promotions.fail(count)

    def delay_promotion(self, seconds: float) -> None:
        """The next Aurora promotion moves the writer ``seconds`` emulated seconds late (see promotions.py)."""
        self.promotions.delay(seconds)

    def invoke(self, region: str, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """Run a function in a region as Lambda would (refused while that region, or Lambda in it, is down)."""
        self._check_region(region)
        worker = self.lambdas.worker(region, function)
        if not self.endpoints[region].up:
            return {"ok": False, "errorType": "RegionDown", "errorMessage": f"{region} is down"}
        if self.outages.of(region) == "functions":
            return {"ok": False, "errorType": "ServiceUnavailable", "errorMessage": f"Lambda in {region} is down"}
        reply = worker.invoke(event)
        name = self.lambdas.deployed_name(region, function)
        self.metrics.record_invocation(region, name, bool(reply.get("ok")), self.clock.now())
        return reply

    def status(self) -> dict[str, Any]:
        assert self.aurora is not None
        regions = {}
        for region in self.config.regions:
            app = self.deployed.app(region)
            regions[region] = {
                "role": self.config.role(region),
                "endpoint": self.endpoints[region].url,
                "ingress": self.ingress[region].url,
                "postgres": self.aurora.uri(region),
                "up": self.endpoints[region].up,
                "outage": self.outages.of(region),  # None, "region" or the part down: database|ingress|functions
                "partitioned": region in self.partitioned,
                # where the other region reaches it (tandem.twin.border): what a partition cuts
                "peer_endpoint": None if self.border is None else self.border.api_url(region),
                "peer_ingress": None if self.border is None else self.border.ingress_url(region),
                "database": self.aurora.role(region),
                "cluster": cluster_of(self.deployed.global_stack(region)),
                "functions": {
                    fn: {
                        "name": self.lambdas.deployed_name(r, fn),
                        "alias": self.lambdas.aliases.get((r, fn)),
                        "pid": w.pid,
                        "restarts": w.restarts,
                    }
                    for (r, fn), w in self.lambdas.workers.items()
                    if r == region
                },
                "resources": app_resources(app),
                "faults_pending": self.endpoints[region].faults.pending,
            }
        return {
            "regions": regions,
            "global_cluster": self.deployed.global_stack(self.config.primary).outputs.get("GlobalClusterIdentifier"),
            "writer_region": self.aurora.writer,
            "promotions_to_fail": self.promotions.to_fail,
            "promotion_delay_seconds": self.promotions.delay_seconds,  # for the next promotion
            "promotion_in_progress": self.promotions.in_progress,  # a delayed one: mode, to_region, moves_at
            "hosted_zone": self.deployed.hosted_zone,
            "deploy_inputs": self.deployed.site,  # what `tandem deploy --target twin` adds to samconfig.toml
            "replication": {
                "aurora_replay_lag_bytes": self.aurora.replay_lag_bytes(),
                "dynamodb_pending_changes": self.dynamo.pending(),
                "s3_pending_objects": self.s3.pending(),
                "paused": dict(self.replication_paused),
                **self.holds.describe(),
            },
            "clock": {"scale": self.clock.scale, "now": self.clock.now()},
            "async_invocations": {
                "retried": self.async_invocations.retried,
                "throttled": self.async_invocations.throttled,
            },
            "startup_seconds": round(self.started_at, 3),
        }

    # ------------------------------------------------------------------ internals
    def client(self, region: str, service: str) -> Any:
        """A cached boto3 client for one region of the twin (boto3 clients are thread-safe)."""
        key = (region, service)
        if key not in self._clients:
            self._clients[key] = emulator_client(service, region, self.endpoints[region].url)
        return self._clients[key]

    def _creators(self, region: str) -> dict[str, Creator]:
        """What serves the app's resources that live outside moto: functions (workers), the ingress, and the
        custom resources (run by their functions)."""
        return {**self.lambdas.creators(), **self.ingress[region].creators(), **self.custom_resources.creators()}

    def _region(self, region: str) -> Region:
        """A region as CloudFormation provisions into it: its API endpoint and the Aurora pair behind it."""
        return Region(region, functools.partial(self.client, region), databases=self.aurora)

    def _check_region(self, region: str) -> None:
        if region not in self.endpoints:
            raise ValueError(f"unknown region {region!r}; the twin has {', '.join(self.config.regions)}")

    def _install_extensions(self) -> None:
        """moto extensions (see tandem.twin.extensions), all driven by the twin clock."""
        from tandem.twin.extensions import (
            cloudformation,
            cloudwatch_alarms,
            dynamodb_replication,
            event_routing,
            lambda_invoke,
            lambda_snapstart,
            rds_global,
            route53_health,
            s3_replication,
            secrets_rotation,
        )

        assert self.aurora is not None
        aurora, clock, up = self.aurora, self.clock, (lambda r: self.endpoints[r].up)
        cloudformation.install(lambda region: (self._region(region), self._creators(region)))

        self.promotions = Promotions(clock, lambda request: aurora.promote(request.to_region, request.mode))
        rds_global.install()
        secrets_rotation.install()  # the master secret's hosted rotation, run on RotateSecret
        rds_global.set_promotion_handler(self.promotions)
        lambda_invoke.install()
        lambda_snapstart.install()
        lambda_invoke.set_invoker(self._invoke_by_api)
        self.dynamo = dynamodb_replication.DynamoReplicator(lag_seconds=0.5, clock=clock, holds=self.holds)
        dynamodb_replication.install(self.dynamo)
        self.s3 = s3_replication.S3Replicator(delay_seconds=2.0, clock=clock, holds=self.holds)
        s3_replication.install(self.s3)
        self.alarms = cloudwatch_alarms.AlarmEvaluator(clock, is_region_up=up)
        self.router = event_routing.EventRouter(self._deliver, clock, is_region_up=up)
        self.alarms.add_listener(self.router.on_alarm_state_change)
        self.poller = event_routing.SqsPoller(self._invoke_arn, clock, is_region_up=self._lambda_up)
        self.health = route53_health.HealthChecker(clock, endpoint_probe=self._probe)
        route53_health.install()
        cloudwatch = functools.partial(self.client, service="cloudwatch")
        self.metrics = ServiceMetrics(clock, list(self.config.regions), cloudwatch, up)
        self.logs = EmfExtractor(clock, cloudwatch, up)
        replication_metrics = [  # after the replicators: a period's datapoint includes that tick's copies
            dynamodb_replication.LatencyPublisher(self.dynamo, cloudwatch, up, clock.real_seconds),
            s3_replication.RuleMetricsPublisher(self.s3, cloudwatch, up, clock.real_seconds),
        ]
        self._tickers += [self.metrics, self.logs, self.dynamo, self.s3, *replication_metrics, self.alarms, self.router]
        self._tickers += [self.health]
        # The poller invokes the processor synchronously: on the loop above, every batch would hold back
        # replication, alarms and metrics for as long as the function runs (under load, seconds - DynamoDB's
        # replication then lagged by seconds when AWS's does not). Lambda's pollers are their own service.

    def _invoke_by_api(self, region: str, name: str, event: Any, kind: str) -> dict[str, Any] | None:
        """Lambda's Invoke API: synchronous runs wait for the worker, Event invocations are queued."""
        function = self.lambdas.function_of(region, name)
        if kind == "Event":
            self.async_invocations.submit(region, function, event)
            return None
        return self.invoke(region, function, event)

    def _invoke_arn(self, region: str, function_arn: str, event: dict[str, Any]) -> Any:
        """The SQS poller's invoker: run the function behind ``function_arn``; raise on a function error."""
        reply = self.invoke(region, self.lambdas.function_of(region, function_arn), event)
        if not reply.get("ok"):
            raise RuntimeError(f"{reply.get('errorType')}: {reply.get('errorMessage')}")
        return reply.get("response")

    def _deliver(self, region: str, target_arn: str, payload: Any) -> None:
        """EventBridge rule targets: our functions (asynchronous invocation: errors are logged) and queues."""
        if ":function:" in target_arn:
            self.async_invocations.submit(region, self.lambdas.function_of(region, target_arn), payload)
        elif target_arn.startswith("arn:aws:sqs:"):
            _, _, _, queue_region, account, name = target_arn.split(":", 5)
            sqs = self.client(queue_region, "sqs")
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=payload if isinstance(payload, str) else json.dumps(payload))
        else:
            log.warning("event target %s is not a kind the twin delivers to", target_arn)

    def _lambda_up(self, region: str) -> bool:
        """Lambda serves in ``region`` (its SQS pollers are Lambda's: they stand still in a functions outage)."""
        return self.endpoints[region].up and self.outages.of(region) != "functions"

    def _probe(self, config: dict[str, Any]) -> bool:
        """Route53 endpoint checks, from outside both regions: a region's ingress answers ``GET /health`` while
        its endpoint and ingress serve, its functions run and it is not partitioned (see outages.py)."""
        target = str(config.get("FullyQualifiedDomainName") or config.get("IPAddress") or "")
        for region, endpoint in self.endpoints.items():
            if region in target:
                serving = endpoint.up and self.ingress[region].up
                return serving and ingress_answers(self.outages.of(region), partitioned=region in self.partitioned)
        return True
