"""Lambda entry point of the replication monitor (every minute, in both regions, outside the VPC).

Thin: parse the trigger, run the monitor built once per execution environment, log and return its report
(verdict, reasons, lag per store, peer liveness) - the JSON ``make invoke`` prints. The monitor reads its
Aurora cluster through the in-VPC observer function (``replication_monitor.aurora_app``); without one
configured it connects to the database itself (LEDGER_DB_* settings), as a local run does.
"""

from __future__ import annotations

import gc

gc.disable()  # until the end of this module (its cold start): see tandem_core.coldstart

import functools
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from replication_monitor.events import parse_trigger
from replication_monitor.metrics import EmfSink
from replication_monitor.monitor import FenceKeeper, ReplicationMonitor
from replication_monitor.probe import HttpProber
from tandem_core import coldstart
from tandem_core.aurora_observer import AuroraSource, InvokedAurora, ledger_aurora_from_env
from tandem_core.clients import client_for, peer_client
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import DlqRedrive, QueueForwarder
from tandem_core.heartbeat import BucketHeartbeats, ControlItems
from tandem_core.settings import AwsSettings, ConfigurationError, MonitorSettings

logger = Logger(service="replication_monitor")
tracer = coldstart.tracer(service="replication_monitor")


def aurora_source(aws: AwsSettings, settings: MonitorSettings) -> AuroraSource:
    """The observer function when configured (the template does), else a direct ledger connection."""
    if settings.aurora_observer_function:
        return InvokedAurora(client_for("lambda", aws), settings.aurora_observer_function)
    return ledger_aurora_from_env(aws)


def fence_keeper(aws: AwsSettings, settings: MonitorSettings) -> FenceKeeper | None:
    """This region's processing switch and forwarder, when the template configured fencing."""
    if not settings.fences:
        return None
    switch = ProcessingSwitch(
        aws.region, client_for("lambda", aws), client_for("ssm", aws),
        str(settings.processor_function), str(settings.processing_state_parameter),
    )  # fmt: skip
    forwarder, dead_letters = None, None
    if settings.peer_queue_url:
        sqs = client_for("sqs", aws)
        peer_sqs = peer_client("sqs", settings.peer_region, settings.peer_endpoint_url, settings.probe_timeout_seconds)
        forwarder = QueueForwarder(sqs, settings.queue_url, peer_sqs, settings.peer_queue_url)
        if settings.dlq_url:
            dead_letters = DlqRedrive(sqs, settings.dlq_url, peer_sqs, settings.peer_queue_url)
    ask = None
    if settings.failover_handler_function:
        ask = functools.partial(ask_handler, client_for("lambda", aws), settings.failover_handler_function)
    return FenceKeeper(switch, forwarder, ask_handler=ask, dead_letters=dead_letters)


def ask_handler(lambda_: Any, handler: str, action: str) -> None:
    """The failover handler's ``reconcile`` or ``resume``, asynchronously (either may outlast this run)."""
    lambda_.invoke(FunctionName=handler, InvocationType="Event",
                   Payload=json.dumps({"action": action, "trigger": "monitor"}).encode())  # fmt: skip


@functools.cache
def build_monitor() -> ReplicationMonitor:
    """Settings, clients and the Aurora source, built once per execution environment."""
    with coldstart.lasting():  # no cyclic collection while it is built (tandem_core.coldstart)
        return _build_monitor()


def _build_monitor() -> ReplicationMonitor:
    aws = AwsSettings.from_env()
    settings = MonitorSettings.from_env()
    if settings.peer_region == aws.region:
        raise ConfigurationError(f"PEER_REGION must be the other region, not this one ({aws.region})")
    return ReplicationMonitor(
        settings,
        aws.region,
        cloudwatch=client_for("cloudwatch", aws),
        sqs=client_for("sqs", aws),
        control=ControlItems(client_for("dynamodb", aws), settings.ledger_table, aws.region, settings.peer_region),
        bucket=BucketHeartbeats(client_for("s3", aws), settings.archive_bucket, aws.region, settings.peer_region),
        aurora=aurora_source(aws, settings),
        prober=HttpProber(),
        fence=fence_keeper(aws, settings),
        events=client_for("events", aws) if settings.failover_rule_name else None,
    )


@logger.inject_lambda_context(clear_state=True)
@coldstart.traced(tracer)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = parse_trigger(event)  # ValueError naming what is wrong: the invoker's error
    monitor = build_monitor()
    region = AwsSettings.from_env().region
    report = monitor.run(EmfSink(region), remaining_ms=context.get_remaining_time_in_millis)
    log = logger.info if report["verdict"] == "ready" else logger.warning
    log(
        "readiness",
        extra={
            "trigger": trigger.kind,
            "verdict": report["verdict"],
            "reasons": report["reasons"],
            "lag_seconds": report["lag_seconds"],
            "peer": {k: v for k, v in report["peer"].items() if k != "probes"},
            "fence": report.get("fence"),  # a non-active region: processing switched off, messages forwarded
        },
    )
    return report


coldstart.end_of_init()
